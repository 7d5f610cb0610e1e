// The console's main path in a real browser (see tests/e2e/console.rs):
// an approver watches the inbox while a psql session's statement is held
// for review, sees it arrive live, and approves it; the requester sees no
// approve button and a forced approval is refused; the approver searches
// audit and exports CSV; people without the auditor role, and people not
// signed in, do not get to audit search.
//
// Extra config: { "approver": LOGIN, "requester": LOGIN, "statement": SQL }

import { readFileSync } from 'node:fs';
import { check, config, run, shot, signIn, step, url } from './lib.mjs';

await run(async (browser) => {
  const statement = config.statement;

  // The approver's inbox is open before the statement is sent.
  const approver = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const inbox = await approver.newPage();
  await signIn(inbox, '/inbox', config.approver);
  check(new URL(inbox.url()).pathname === '/inbox', `signed in at ${inbox.url()}`);
  await inbox.locator('h1', { hasText: 'Inbox' }).waitFor();
  await shot(inbox, 'approver-inbox-empty');
  // Give the event stream a moment to connect before anything changes.
  await inbox.waitForTimeout(1000);
  step('inbox-open');

  // The held statement appears without a reload (server-sent events).
  const card = inbox.locator('.card-link', { hasText: statement });
  await card.waitFor({ timeout: 30000 });
  await shot(inbox, 'approver-inbox-live');
  const href = await card.getAttribute('href');
  check(href?.startsWith('/reviews/'), `inbox link ${href}`);
  const id = href.slice('/reviews/'.length);
  step('review-seen', { id });

  // The requester: the request is in "My requests", its page has no approve
  // button, and an approval posted anyway (with a valid CSRF token) is refused.
  const requester = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const own = await requester.newPage();
  await signIn(own, '/mine', config.requester);
  await own.locator('.card-link', { hasText: statement }).waitFor();
  await shot(own, 'requester-mine');
  await own.goto(url(href));
  await own.locator('#statement', { hasText: statement }).waitFor();
  check((await own.locator('#approve').count()) === 0, 'the requester sees an approve button');
  check((await own.locator('#deny').count()) === 0, 'the requester sees a deny button');
  await own.locator('#own-request').waitFor();
  await shot(own, 'requester-own-request');
  const csrf = await own.locator('input[name="csrf_token"]').first().inputValue();
  check(csrf.length > 20, 'the requester page carries a CSRF token');
  const forced = await own.request.post(url(`${href}/decide`), {
    form: { csrf_token: csrf, decision: 'approve', comment: 'approving my own' },
    maxRedirects: 0,
  });
  const forcedBody = await forced.text();
  check(forced.status() === 403, `forced approval answered ${forced.status()}: ${forcedBody}`);
  check(forcedBody.includes('Your decision was refused'), `forced approval page: ${forcedBody}`);
  // The same through a form in the page, to see what the console shows.
  await Promise.all([
    own.waitForNavigation(),
    own.evaluate(([action, token]) => {
      const form = document.createElement('form');
      form.method = 'post';
      form.action = action;
      for (const [k, v] of [['csrf_token', token], ['decision', 'approve']]) {
        const input = document.createElement('input');
        input.type = 'hidden';
        input.name = k;
        input.value = v;
        form.append(input);
      }
      document.body.append(form);
      form.submit();
    }, [`${href}/decide`, csrf]),
  ]);
  const refusal = await own.locator('#error-message').innerText();
  check(refusal.includes('refused'), `refusal shown: ${refusal}`);
  await own.locator('#status', { hasText: 'pending' }).waitFor();
  await shot(own, 'requester-forced-approval-refused');
  step('requester-refused', { status: forced.status(), message: refusal });

  // No auditor role: no audit search, as a page or through the API.
  const denied = await own.goto(url('/audit'));
  check(denied.status() === 403, `audit search for the requester answered ${denied.status()}`);
  check((await own.locator('#error-message').innerText()).includes('auditor'), 'the 403 page says why');
  check((await own.locator('a[href="/audit"]').count()) === 0, 'the nav links audit for a non-auditor');
  await shot(own, 'requester-audit-forbidden');
  const deniedApi = await own.request.get(url('/api/v1/audit'));
  check(deniedApi.status() === 403, `audit API for the requester answered ${deniedApi.status()}`);
  step('non-auditor-refused', { page: denied.status(), api: deniedApi.status() });

  // The approver decides, with a comment.
  const review = await approver.newPage();
  await review.goto(url(href));
  await review.locator('#statement', { hasText: statement }).waitFor();
  const facts = await review.locator('.facts').innerText();
  for (const want of ['alice@example.com', 'pg-prod', 'delete', 'deletes-need-review', 'orders', 'approved by a DBA']) {
    check(facts.includes(want), `the review page's facts lack ${want}: ${facts}`);
  }
  await review.locator('#comment').fill('checked with the order owner');
  await shot(review, 'approver-review');
  await Promise.all([review.waitForNavigation(), review.locator('#approve').click()]);
  await review.locator('#status', { hasText: 'approved' }).waitFor();
  check((await review.locator('#approve').count()) === 0, 'a decided review still offers approve');
  await review.locator('.decisions', { hasText: 'checked with the order owner' }).waitFor();
  await shot(review, 'approver-approved');
  step('approved', { id });

  // The session's timeline, linked from the review for auditors: the held
  // statement with its decision, rule, duration and rows.
  await Promise.all([review.waitForNavigation(), review.locator('.facts a[href^="/sessions/"]').click()]);
  const held = review.locator('.events tbody tr', { hasText: statement });
  for (let i = 0; i < 40 && !(await held.locator('.decision-review').count()); i += 1) {
    await review.waitForTimeout(500);
    await review.reload();
  }
  await held.locator('.decision-review').first().waitFor();
  const cells = await held.first().locator('td').allInnerTexts();
  check(cells.some((c) => c.includes('deletes-need-review')), `timeline row: ${cells}`);
  check(cells.some((c) => /^\d+\.\d ms$/.test(c.trim())), `timeline duration: ${cells}`);
  check(cells.some((c) => c.trim() === '1'), `timeline rows: ${cells}`);
  await shot(review, 'approver-session-timeline');
  step('timeline', { path: new URL(review.url()).pathname });

  // The requester's list shows the outcome.
  await own.goto(url('/mine'));
  await own.locator('.card-link', { hasText: statement }).locator('.status-approved').waitFor({ timeout: 15000 });

  // Phone-sized screen: nothing wider than the viewport; keyboard reaches the
  // skip link and then the navigation, with a visible focus outline.
  const phone = await approver.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(url(href));
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the review page is ${overflow}px wider than a phone screen`);
  await shot(phone, 'phone-review');
  await phone.keyboard.press('Tab');
  check(await phone.evaluate(() => document.activeElement?.classList.contains('skip')), 'first Tab reaches the skip link');
  await phone.keyboard.press('Tab');
  const focused = await phone.evaluate(() => ({
    text: document.activeElement?.textContent,
    outline: getComputedStyle(document.activeElement).outlineStyle,
  }));
  check(focused.text === 'Countersign' && focused.outline !== 'none', `second Tab: ${JSON.stringify(focused)}`);
  for (const path of ['/inbox', '/mine', `/audit?text=${encodeURIComponent(statement)}`]) {
    await phone.goto(url(path));
    const wider = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(wider <= 1, `${path} is ${wider}px wider than a phone screen`);
  }
  await shot(phone, 'phone-audit');

  // Audit search finds the statement once the gateway has uploaded it.
  const audit = await approver.newPage();
  await audit.goto(url('/audit'));
  await audit.locator('input[name="text"]').fill(statement);
  await audit.locator('select[name="event"]').selectOption('statement');
  await audit.locator('select[name="decision"]').selectOption('review');
  let found = false;
  for (let i = 0; i < 40 && !found; i += 1) {
    await Promise.all([audit.waitForNavigation(), audit.locator('form.search button[type="submit"]').click()]);
    found = (await audit.locator('.events tbody tr', { hasText: statement }).count()) > 0;
    if (!found) await audit.waitForTimeout(500);
  }
  check(found, 'audit search never showed the statement');
  const row = audit.locator('.events tbody tr', { hasText: statement }).first();
  await row.locator('.decision-review').waitFor();
  await shot(audit, 'approver-audit-search');

  const [download] = await Promise.all([
    audit.waitForEvent('download'),
    audit.locator('#export-csv').click(),
  ]);
  const csv = readFileSync(await download.path(), 'utf8');
  const lines = csv.trim().split('\r\n');
  check(lines[0].startsWith('id,at,session_id,seq,event,identity,resource,decision'), `CSV header: ${lines[0]}`);
  const rows = lines.slice(1).filter((l) => l.includes(statement));
  check(rows.length >= 1, `CSV has no row for the statement: ${csv}`);
  check(rows.every((l) => l.includes('"review"') && l.includes('"statement"')), `CSV rows: ${rows.join('\n')}`);
  step('csv', { file: download.suggestedFilename(), rows });

  // Not signed in: the audit page sends the browser to sign in, the API says 401.
  const stranger = await browser.newContext();
  const bare = await stranger.request.get(url('/audit?text=x'), { maxRedirects: 0 });
  check(bare.status() === 303, `audit search without a session answered ${bare.status()}`);
  const location = bare.headers().location ?? '';
  check(location === '/auth/login?return_to=%2Faudit%3Ftext%3Dx', `redirected to ${location}`);
  const bareApi = await stranger.request.get(url('/api/v1/audit'));
  check(bareApi.status() === 401, `audit API without a session answered ${bareApi.status()}`);
  const landing = await stranger.newPage();
  await landing.goto(url('/audit'));
  check(!landing.url().startsWith(config.server), `a stranger stayed on ${landing.url()}`);
  await landing.locator('input[name="login"]').waitFor();
  await shot(landing, 'stranger-sent-to-sign-in');
  step('stranger-refused', { page: bare.status(), api: bareApi.status() });
});
