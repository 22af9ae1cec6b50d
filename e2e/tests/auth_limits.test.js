// Mail limits: `[auth.email] max_frequency` (per user) and `[auth.rate_limit] email_sent` (all
// mail together), with confirmations on, as GoTrue applies them: 429 over_email_send_rate_limit,
// and a sign-up whose mail could not go out leaves no user behind. No SMTP server: the mail
// lands in the outbox.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMadbase, client, ANON_KEY, AUTH_TEST_ENV, uniqueEmail } from './support.js';

let server;
const PASSWORD = 'correct-horse-battery';

before(async () => {
  server = await startMadbase({
    env: {
      ...AUTH_TEST_ENV,
      MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS: 'true',
      MADBASE_AUTH_EMAIL_MAX_FREQUENCY: '1h',
      MADBASE_AUTH_RATE_LIMIT_EMAIL_SENT: '3',
    },
  });
});

after(async () => {
  await server?.stop();
});

const usersWith = (email) => server.sql(`select count(*) from auth.users where email = '${email}'`).trim();

test('a second confirmation mail within max_frequency is 429 over_email_send_rate_limit', async () => {
  const email = uniqueEmail('freq');
  const supabase = client(server, ANON_KEY);
  const first = await supabase.auth.signUp({ email, password: PASSWORD });
  assert.equal(first.error, null);
  const again = await supabase.auth.resend({ type: 'signup', email });
  assert.equal(again.error?.status, 429);
  assert.equal(again.error.code, 'over_email_send_rate_limit');
  assert.match(again.error.message, /^For security purposes, you can only request this after \d+ seconds\.$/);
  const seconds = Number(/after (\d+) seconds/.exec(again.error.message)[1]);
  assert.ok(seconds > 3500 && seconds <= 3600, again.error.message);
});

test('past rate_limit.email_sent mails an hour, sign-ups are 429 and leave no user behind', async () => {
  // The first test sent one mail; two more fit.
  for (let i = 0; i < 2; i++) {
    const { error } = await client(server, ANON_KEY).auth.signUp({ email: uniqueEmail(`budget${i}`), password: PASSWORD });
    assert.equal(error, null, `mail ${i + 2} of 3`);
  }
  const email = uniqueEmail('over');
  const { data, error } = await client(server, ANON_KEY).auth.signUp({ email, password: PASSWORD });
  assert.equal(data.user, null);
  assert.equal(error?.status, 429);
  assert.equal(error.code, 'over_email_send_rate_limit');
  assert.equal(error.message, 'email rate limit exceeded');
  assert.equal(usersWith(email), '0');

  // Recovery for an address that is not registered sends nothing: {} even with the budget spent.
  const recover = await client(server, ANON_KEY).auth.resetPasswordForEmail(email);
  assert.equal(recover.error, null, recover.error?.message);
  assert.deepEqual(recover.data, {});
});
