// Shared helpers for Countersign's browser tests: headless Chromium through
// playwright-core, sign-in at the test OpenID provider, screenshots, and the
// line protocol with the Rust test that runs the scenario.
//
// Configuration comes as JSON in CONSOLE_TEST_CONFIG:
//   { "module": ".../node_modules/playwright-core/index.mjs",
//     "chromium": "/usr/bin/chromium", "server": "http://127.0.0.1:PORT",
//     "screenshots": "/abs/dir", ...scenario fields }
// The scenario prints one JSON object per line on stdout: {"step": NAME, ...}
// as it goes, and {"done": true} at the end; on failure {"error": MESSAGE}
// and exit code 1. Lines starting with anything else are log output.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const config = JSON.parse(process.env.CONSOLE_TEST_CONFIG ?? '{}');
const { chromium } = await import(pathToFileURL(config.module).href);

export function step(name, detail = {}) {
  process.stdout.write(JSON.stringify({ step: name, ...detail }) + '\n');
}

export function check(cond, message) {
  if (!cond) throw new Error(message);
}

export function url(path) {
  return config.server + path;
}

export async function launch() {
  return chromium.launch({
    executablePath: config.chromium,
    headless: true,
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

let shots = 0;
export async function shot(page, name) {
  mkdirSync(config.screenshots, { recursive: true });
  shots += 1;
  const file = join(config.screenshots, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  step('screenshot', { file });
}

// Opens `path` in `page`; when the console sends the browser to sign in,
// signs in at the provider as `login` and returns once back on the console.
export async function signIn(page, path, login) {
  await page.goto(url(path));
  for (let i = 0; i < 10 && !page.url().startsWith(config.server); i += 1) {
    const loginField = page.locator('input[name="login"]');
    if (await loginField.count()) {
      await loginField.fill(login);
      await page.locator('input[name="password"]').fill('any');
    }
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.locator('button[type="submit"], input[type="submit"]').first().click(),
    ]);
  }
  check(page.url().startsWith(config.server), `sign-in as ${login} ended at ${page.url()}`);
}

export async function run(scenario) {
  const browser = await launch();
  try {
    await scenario(browser);
    process.stdout.write(JSON.stringify({ done: true }) + '\n');
  } catch (e) {
    // Every open page as it was when the scenario failed.
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        await shot(page, 'failure').catch(() => {});
      }
    }
    process.stdout.write(JSON.stringify({ error: String(e?.stack ?? e) }) + '\n');
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
