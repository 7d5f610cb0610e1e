// A real OpenID provider (the `oidc-provider` package) for Countersign's SSO
// tests. Configuration comes as JSON in OIDC_TEST_CONFIG:
//
//   {
//     "module": "/abs/path/node_modules/oidc-provider/lib/index.js",
//     "clients": [{ "client_id", "client_secret", "redirect_uris": [...] }],
//     "users_file": "/abs/path/users.json",
//     "clock_skew_seconds": 0
//   }
//
// It listens on 127.0.0.1 with a port chosen by the system and prints one
// JSON line, {"issuer": "http://127.0.0.1:PORT"}, once it accepts requests.
// users.json maps a login (which is also the subject, `sub`) to
// { "email", "email_verified"?, "name"?, "groups"? }. It is read at every
// sign-in, so a test can change someone's groups between two logins.
// Sign-in uses the package's development login form (any password); consent
// is granted automatically so a test can drive it with plain HTTP requests.
// With clock_skew_seconds, token responses are made with the clock set that
// far back, so their ID tokens are already expired when they arrive.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG ?? '{}');
const { default: Provider } = await import(pathToFileURL(config.module).href);

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const users = () => JSON.parse(readFileSync(config.users_file, 'utf8'));

const provider = new Provider(issuer, {
  clients: (config.clients ?? []).map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the requested claims into the ID token itself, as Countersign reads them there.
  conformIdTokenClaims: false,
  cookies: { keys: ['countersign-test-cookie-key'] },
  async findAccount(ctx, id) {
    const user = users()[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: user.email,
          email_verified: user.email_verified ?? true,
          name: user.name ?? id,
          groups: user.groups ?? [],
        };
      },
    };
  },
  // Consent is not what these tests are about: grant what was asked.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const grant = new Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid');
    grant.addOIDCClaims(['sub', 'email', 'email_verified', 'name', 'groups']);
    await grant.save();
    return grant;
  },
});

const skew = Number(config.clock_skew_seconds ?? 0);
if (skew) {
  const realNow = Date.now;
  provider.use(async (ctx, next) => {
    if (ctx.path !== '/token') return next();
    Date.now = () => realNow() - skew * 1000;
    try {
      await next();
    } finally {
      Date.now = realNow;
    }
  });
}

provider.on('server_error', (ctx, err) => console.error('server_error', err));
server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
