// The admin pages in a real browser (see tests/e2e/console.rs): an admin
// sees resources, role bindings, gateways, the diff between two policy
// versions and a dry run of a statement; markup typed into a form comes back
// as text; someone without the admin role gets the 403 page.
//
// Extra config: { "admin": LOGIN, "other": LOGIN, "added_rule": NAME }

import { check, config, run, shot, signIn, step, url } from './lib.mjs';

await run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('dialog', (d) => { throw new Error(`a dialog opened: ${d.message()}`); });
  await signIn(page, '/admin', config.admin);
  check(new URL(page.url()).pathname === '/admin/resources', `admin landed on ${page.url()}`);
  await page.locator('#admin-table td', { hasText: 'pg-prod' }).first().waitFor();
  await shot(page, 'admin-resources');

  const bindings = await page.goto(url('/admin/bindings'));
  check(bindings.status() === 200, `bindings page: ${bindings.status()}`);
  await shot(page, 'admin-bindings');
  const gateways = await page.goto(url('/admin/gateways'));
  check(gateways.status() === 200, `gateways page: ${gateways.status()}`);
  await shot(page, 'admin-gateways');

  await page.goto(url('/admin/policies'));
  await page.locator('input[name="from"]').fill('1');
  await page.locator('input[name="to"]').fill('2');
  await Promise.all([page.waitForNavigation(), page.locator('#compare').click()]);
  const added = page.locator('#diff .added', { hasText: config.added_rule });
  await added.first().waitFor();
  check((await page.locator('#diff .removed').count()) === 0, 'the diff shows removed lines');
  await shot(page, 'admin-policy-diff');
  step('diff', { added: await added.count() });

  await page.locator('input[name="identity"]').fill('alice@example.com');
  await page.locator('input[name="resource"]').fill('pg-prod');
  await page.locator('textarea[name="statement"]').fill('DELETE FROM orders WHERE id = 1');
  await Promise.all([page.waitForNavigation(), page.locator('#dry-run').click()]);
  const result = await page.locator('#dry-run-result').innerText();
  check(result.includes('review') && result.includes('deletes-need-review'), `dry run: ${result}`);
  await shot(page, 'admin-policy-dry-run');
  step('dry-run', { result });

  // Markup comes back as text: escaped by the templates, and no script runs.
  const markup = '<script>alert(1)</script><img src=x onerror=alert(2)>';
  await page.locator('textarea[name="statement"]').fill(markup);
  await Promise.all([page.waitForNavigation(), page.locator('#dry-run').click()]);
  check((await page.locator('textarea[name="statement"]').inputValue()) === markup, 'the statement did not round-trip as text');
  check((await page.locator('main script, main img').count()) === 0, 'markup from a form became elements');

  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await signIn(otherPage, '/inbox', config.other);
  check((await otherPage.locator('a[href="/admin/resources"]').count()) === 0, 'a non-admin sees the Admin link');
  for (const path of ['/admin/resources', '/admin/bindings', '/admin/policies', '/admin/gateways']) {
    const response = await otherPage.goto(url(path));
    check(response.status() === 403, `${path} for a non-admin: ${response.status()}`);
  }
  await shot(otherPage, 'non-admin-forbidden');
  step('non-admin-refused');
});
