'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { setup, events } = require('./helpers');
const { err } = require('../shim/api');

function withRandom(value, fn) {
  const real = Math.random;
  Math.random = () => value;
  return Promise.resolve().then(fn).then((r) => {
    Math.random = real;
    return r;
  }, (e) => {
    Math.random = real;
    throw e;
  });
}

const RETRIED = [
  ['no answer (wx.request fail)', { fail: 'request:fail timeout' }],
  ['500', err(500, 'internal_error')],
  ['502', { status: 502, data: 'Bad Gateway' }],
  ['503', err(503, 'unavailable')],
  ['429', err(429, 'rate_limited', 'slow down', { 'Retry-After': '2' })],
  ['408', err(408, 'request_timeout')]
];
for (const [name, answer] of RETRIED) {
  test('retried: ' + name, async () => {
    const t = setup({ options: { retryBase: 1000, retryMax: 60000 } });
    try {
      t.env.script('/events', [answer]);
      const id = t.hl.track('search');
      const s = await t.hl.flush();
      assert.deepStrictEqual(s, { sent: 0, rejected: 0, pending: 1 });
      assert.strictEqual(t.hl.stats().retries, 1);
      await t.clock.until(() => t.env.sent('/events').length === 2, 10000);
      await t.clock.tick(10);
      assert.strictEqual(t.hl.stats().queued, 0);
      assert.deepStrictEqual(t.env.api.stored().map((x) => x[1].id), [id]);
    } finally {
      t.done();
    }
  });
}

for (const status of [400, 403, 404, 413, 422]) {
  test('not retried: ' + status + ' (the batch is dropped with its reason logged)', async () => {
    const t = setup({ options: { retryBase: 100 } });
    try {
      t.env.script('/events', [err(status, 'invalid_request', 'events: bad envelope')]);
      t.hl.track('search');
      t.hl.track('like');
      const s = await t.hl.flush();
      assert.deepStrictEqual(s, { sent: 0, rejected: 2, pending: 0 });
      await t.clock.tick(60000);
      assert.strictEqual(t.env.sent('/events').length, 1, 'no retry');
      assert.strictEqual(t.hl.stats().queued, 0);
      assert.strictEqual(t.hl.stats().rejected, 2);
      assert.ok(t.warnings.some((w) => /batch refused/.test(w) && /bad envelope/.test(w)));
    } finally {
      t.done();
    }
  });
}

test('backoff: full jitter, doubling from retryBase, capped at retryMax', async () => {
  const t = setup({ options: { retryBase: 1000, retryMax: 10000 } });
  try {
    await withRandom(0.999, async () => {
      t.env.script('/events', Array(7).fill(err(503, 'unavailable')));
      t.hl.track('search');
      t.hl.flush();
      await t.clock.until(() => t.env.sent('/events').length === 8, 200000, 50);
    });
    const at = t.env.sent('/events').map((r) => r.at);
    const gaps = at.slice(1).map((x, i) => x - at[i]);
    const expected = [1000, 2000, 4000, 8000, 10000, 10000, 10000].map((d) => Math.floor(0.999 * d));
    gaps.forEach((g, i) => assert.ok(g >= expected[i] && g < expected[i] + 60, 'gap ' + i + ' ' + g + ' vs ' + expected[i]));
    await t.clock.tick(10);
    assert.strictEqual(t.hl.stats().queued, 0);
    assert.strictEqual(t.hl.stats().retries, 7);
  } finally {
    t.done();
  }
});

test('backoff: the jitter is random(0, cap), so a low draw retries early', async () => {
  const t = setup({ options: { retryBase: 1000 } });
  try {
    await withRandom(0.1, async () => {
      t.env.script('/events', [err(500, 'x'), err(500, 'x')]);
      t.hl.track('search');
      t.hl.flush();
      await t.clock.until(() => t.env.sent('/events').length === 3, 10000, 10);
    });
    const at = t.env.sent('/events').map((r) => r.at);
    assert.ok(at[1] - at[0] <= 110 && at[2] - at[1] <= 210, JSON.stringify(at));
  } finally {
    t.done();
  }
});

test('429 and 503 honour Retry-After when longer than the backoff', async () => {
  for (const status of [429, 503]) {
    const t = setup({ options: { retryBase: 1000 } });
    try {
      t.env.script('/events', [err(status, 'busy', 'later', { 'retry-after': '30' })]);
      t.hl.track('search');
      await t.hl.flush();
      const t0 = t.env.sent('/events')[0].at;
      await t.clock.tick(29000);
      t.hl.track('like'); // new events do not jump the wait
      await t.clock.tick(900);
      assert.strictEqual(t.env.sent('/events').length, 1, status + ': not before 30 s');
      await t.clock.until(() => t.env.sent('/events').length === 2, 5000);
      assert.ok(t.env.sent('/events')[1].at - t0 >= 30000);
    } finally {
      t.done();
    }
  }
});

test('rejected items are dropped and logged; accepted and duplicate ones leave the queue', async () => {
  const t = setup({ env: { apiOptions: { rejectTypes: ['like'] } } });
  try {
    t.env.script('/events', ['lose']);
    t.hl.track('search');
    await t.hl.flush(); // stored, answer lost
    t.hl.track('like');
    t.hl.track('comment');
    const s = await t.hl.flush();
    assert.deepStrictEqual(s, { sent: 2, rejected: 1, pending: 0 });
    const st = t.hl.stats();
    assert.strictEqual(st.queued, 0);
    assert.strictEqual(st.sent, 1);
    assert.strictEqual(st.duplicates, 1);
    assert.strictEqual(st.rejected, 1);
    assert.ok(t.warnings.some((w) => /event rejected: like .*type: not allowed here/.test(w)), t.warnings.join('\n'));
  } finally {
    t.done();
  }
});

test('at most 2 requests of the SDK are open at once (events, claims and calls together)', async () => {
  const t = setup({ options: { maxBatch: 1, batchSize: 1000, flushInterval: 60000 } });
  try {
    await t.hl.login();
    for (let i = 0; i < 6; i++) t.hl.track('search', { i: i });
    t.env.script('POST /mp/v1/', Array(9).fill('hold'));
    const f = t.hl.flush();
    const claim = t.hl.coupons.claim(1);
    const list = t.hl.coupons.list();
    await t.clock.tick(50);
    assert.strictEqual(t.env.open, 2);
    assert.strictEqual(t.hl.stats().inFlight, 2);
    while (t.env.held.length) {
      t.env.release();
      await t.clock.tick(5);
      assert.ok(t.env.open <= 2);
    }
    await Promise.all([f, claim, list]);
    assert.strictEqual(t.env.maxOpen, 2);
    assert.strictEqual(t.env.api.stored().length, 6);
  } finally {
    t.done();
  }
});

test('maxInFlight is an option', async () => {
  const t = setup({ options: { maxBatch: 1, maxInFlight: 3 } });
  try {
    await t.hl.login();
    for (let i = 0; i < 6; i++) t.hl.track('search');
    t.env.script('/events', Array(6).fill('hold'));
    const f = t.hl.flush();
    await t.clock.tick(10);
    assert.strictEqual(t.env.open, 3);
    while (t.env.held.length) {
      t.env.release();
      await t.clock.tick(5);
    }
    await f;
  } finally {
    t.done();
  }
});

test('a 401 renews the token once and resends the batch', async () => {
  const t = setup();
  try {
    await t.hl.login();
    t.env.script('/events', [err(401, 'token_expired')]);
    const id = t.hl.track('search');
    const s = await t.hl.flush();
    assert.deepStrictEqual(s, { sent: 1, rejected: 0, pending: 0 });
    assert.strictEqual(t.env.sent('/login').length, 2);
    const reqs = t.env.sent('/events');
    assert.strictEqual(reqs.length, 2);
    assert.notStrictEqual(reqs[0].header.Authorization, reqs[1].header.Authorization);
    assert.deepStrictEqual(t.env.api.stored().map((x) => x[1].id), [id]);
  } finally {
    t.done();
  }
});

test('a second 401 leaves the events waiting until the next show (or login())', async () => {
  const t = setup({ options: { flushInterval: 1000 } });
  try {
    t.env.script('/events', [err(401, 'invalid_token'), err(401, 'invalid_token')]);
    t.hl.track('search');
    const s = await t.hl.flush();
    assert.deepStrictEqual(s, { sent: 0, rejected: 0, pending: 1 });
    assert.strictEqual(t.env.sent('/login').length, 2, 'one login, one renewal');
    t.hl.track('like');
    await t.clock.tick(120000);
    assert.strictEqual(t.env.sent('/events').length, 2, 'nothing more while blocked');
    assert.strictEqual(t.env.sent('/login').length, 2, 'no renewal loop');
    assert.strictEqual(t.hl.stats().queued, 2);
    t.env.hide();
    t.env.show();
    await t.clock.tick(1100);
    assert.strictEqual(t.hl.stats().queued, 0);
    assert.strictEqual(t.env.api.stored().length, 2);

    t.env.script('/events', [err(401, 'invalid_token'), err(401, 'invalid_token')]);
    t.hl.track('comment');
    await t.hl.flush();
    assert.strictEqual(t.hl.stats().queued, 1);
    await t.hl.login();
    await t.hl.flush();
    assert.strictEqual(t.hl.stats().queued, 0, 'login() releases them too');
  } finally {
    t.done();
  }
});

test('the token is renewed when within 300 s of expiry, and kept in storage', async () => {
  const t = setup({ env: { apiOptions: { ttl: 1000 } } });
  try {
    const tok = await t.hl.login();
    assert.deepStrictEqual(t.env.stored('token'), { token: tok, exp: t.clock.now + 1000 * 1000 });
    await t.clock.tick(600 * 1000);
    t.hl.track('search');
    await t.hl.flush();
    assert.strictEqual(t.env.sent('/login').length, 1, '400 s left: no renewal');
    await t.clock.tick(110 * 1000);
    t.hl.track('search');
    await t.hl.flush();
    const order = t.env.requests.map((r) => r.path);
    assert.deepStrictEqual(order.slice(-2), ['/mp/v1/login', '/mp/v1/events'], '290 s left: renewed first');
    assert.notStrictEqual(t.env.stored('token').token, tok);
    const { env, hl } = t.restart();
    await hl.coupons.list();
    assert.strictEqual(env.sent('/login').length, 0, 'the stored token is reused after a restart');
  } finally {
    t.done();
  }
});

test('events are held until a token exists', async () => {
  const t = setup({ options: { retryBase: 1000 } });
  try {
    t.env.loginFail = 'login:fail network';
    t.hl.track('search');
    const s = await t.hl.flush();
    assert.deepStrictEqual(s, { sent: 0, rejected: 0, pending: 1 });
    await t.clock.tick(30000);
    assert.strictEqual(t.env.sent('/events').length, 0);
    assert.strictEqual(t.hl.stats().queued, 1);
    t.env.loginFail = null;
    await t.clock.until(() => t.env.sent('/events').length === 1, 600000, 1000);
    await t.clock.tick(10);
    assert.strictEqual(t.hl.stats().queued, 0);
  } finally {
    t.done();
  }
});

test('the login says which app it is for and is retried on 503', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    t.env.script('/login', [err(503, 'wechat_busy'), err(404, 'unknown_app')]);
    const p = t.hl.login().then(() => null, (e) => e);
    await t.clock.tick(1000);
    const e = await p;
    assert.ok(((e) => e.status === 404 && e.code === 'unknown_app' && e.retryable === false)(e), String(e));
    const logins = t.env.sent('/login');
    assert.strictEqual(logins.length, 2);
    assert.strictEqual(logins[0].header['X-Huiliu-Appid'], 'wxtest0001');
    assert.notStrictEqual(logins[0].data.code, logins[1].data.code, 'a fresh wx.login code per try');
  } finally {
    t.done();
  }
});

test('a failing batch stops the batches queued behind it (no storm), the backoff sends them later', async () => {
  const t = setup({ options: { maxBatch: 1, maxInFlight: 1, retryBase: 1000 } });
  try {
    await t.hl.login();
    for (let i = 0; i < 5; i++) t.hl.track('search');
    t.env.script('/events', [{ fail: 'request:fail' }]);
    const s = await t.hl.flush();
    assert.deepStrictEqual(s, { sent: 0, rejected: 0, pending: 5 });
    assert.strictEqual(t.env.sent('/events').length, 1);
    await t.clock.until(() => t.hl.stats().queued === 0, 60000);
    assert.strictEqual(t.env.api.stored().length, 5);
    assert.strictEqual(events(t.env).length, 6);
  } finally {
    t.done();
  }
});
