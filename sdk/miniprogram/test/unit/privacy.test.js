'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { setup } = require('./helpers');
const { err } = require('../shim/api');

test('opt-out: the queue is cleared, track returns null, nothing but the opt-out is sent', async () => {
  const t = setup({ options: { autoTrack: true, flushInterval: 1000 } });
  try {
    t.hl.track('search');
    t.hl.track('like');
    const before = t.env.requests.length;
    assert.strictEqual(t.hl.isOptedOut(), false);
    const answer = await t.hl.optOut();
    assert.strictEqual(t.hl.isOptedOut(), true);
    assert.deepStrictEqual(answer, { marketing_opt_out: true });
    assert.strictEqual(t.hl.stats().queued, 0);
    assert.strictEqual(t.env.stored('queue').events.length, 0, 'cleared in storage too');
    assert.strictEqual(t.hl.track('search'), null);
    await t.hl.flush();
    t.env.hide();
    t.env.show({ query: { touch_id: '5' } });
    await t.clock.tick(60000);
    await assert.rejects(t.hl.coupons.claim(1), (e) => e.code === 'opted_out');
    await assert.rejects(t.hl.requestSubscribe(['T1']), (e) => e.code === 'opted_out');
    await assert.rejects(t.hl.reengagement(), (e) => e.code === 'opted_out');
    const after = t.env.requests.slice(before).map((r) => r.method + ' ' + r.path);
    assert.deepStrictEqual(after.filter((p) => p !== 'POST /mp/v1/login'), ['POST /mp/v1/me/opt-out']);
    assert.strictEqual(t.env.api.stored().length, 0);

    const { env, hl } = t.restart({ autoTrack: true });
    assert.strictEqual(hl.track('search'), null, 'still opted out after a restart');
    assert.strictEqual(hl.isOptedOut(), true);
    env.show();
    await t.clock.tick(60000);
    assert.deepStrictEqual(env.requests, []);

    await hl.optIn();
    assert.match(hl.track('search'), /^e/);
    await hl.flush();
    assert.strictEqual(env.api.stored().length, 1);
  } finally {
    t.done();
  }
});

test('an opt-out the server did not hear is sent again on the next show', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    t.env.script('/opt-out', [err(503, 'x'), err(503, 'x'), err(503, 'x')]);
    const p = t.hl.optOut().then(() => null, (e) => e);
    await t.clock.tick(5000);
    assert.strictEqual((await p).status, 503);
    assert.strictEqual(t.env.stored('optout').synced, false);
    assert.strictEqual(t.hl.track('search'), null, 'already opted out locally');
    t.env.hide();
    t.env.show();
    await t.clock.tick(100);
    assert.strictEqual(t.env.sent('/opt-out').length, 4);
    assert.deepStrictEqual(t.env.stored('optout'), { v: true, synced: true });
    assert.strictEqual(t.env.api.users.get('o_tester').optOut, true);
  } finally {
    t.done();
  }
});

test('order_paid / order_refunded are refused unless allowOrderEvents', async () => {
  const t = setup();
  try {
    assert.strictEqual(t.hl.track('order_paid', { order_id: 'A1', amount_fen: 100 }), null);
    assert.strictEqual(t.hl.track('order_refunded', { order_id: 'A1' }), null);
    assert.ok(t.warnings.some((w) => /orders must come from your server/.test(w)));
    const t2 = t.start({ allowOrderEvents: true });
    assert.match(t2.track('order_paid', { order_id: 'A1', amount_fen: 100 }), /^e/);
    assert.match(t2.track('order_refunded', { order_id: 'A1' }), /^e/);
  } finally {
    t.done();
  }
});

test('eraseMe deletes the user, then every storage key of the SDK', async () => {
  const t = setup({ options: { autoTrack: true } });
  try {
    t.hl.track('search');
    await t.hl.flush();
    t.hl.track('like');
    t.env.script('/claim', ['lose', 'lose', 'lose']);
    const c = t.hl.coupons.claim(1).then(() => null, (e) => e);
    await t.clock.tick(5000);
    assert.ok((await c).pending);
    await t.clock.tick(400);
    assert.ok(Array.from(t.env.storage.keys()).length >= 5);
    const d = await t.hl.eraseMe();
    assert.ok(d.erased);
    assert.strictEqual(t.env.sent('DELETE /mp/v1/me').length, 1);
    assert.deepStrictEqual(Array.from(t.env.storage.keys()).filter((k) => k.indexOf('huiliu:') === 0), []);
    assert.strictEqual(t.env.api.users.has('o_tester'), false);
    assert.deepStrictEqual(t.hl.stats(), { queued: 0, inFlight: 0, sent: 0, duplicates: 0, rejected: 0, dropped: 0, retries: 0 });
    await t.clock.tick(60000);
    assert.strictEqual(t.env.api.users.has('o_tester'), false, 'nothing queued before the erase comes back');
  } finally {
    t.done();
  }
});

test('eraseMe: a 401 invalid_token on a retry counts as done (the user is gone)', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    await t.hl.login();
    t.env.script('DELETE /mp/v1/me', ['lose']);
    const p = t.hl.eraseMe();
    await t.clock.tick(1000);
    const d = await p;
    assert.deepStrictEqual(d, { erased: null });
    assert.strictEqual(t.env.sent('DELETE /mp/v1/me').length, 2);
    assert.strictEqual(t.env.sent('/login').length, 1, 'no new login (it would create the user again)');
    assert.deepStrictEqual(Array.from(t.env.storage.keys()), []);
  } finally {
    t.done();
  }
});

test('eraseMe after an opt-out keeps only the opt-out, and sends nothing more', async () => {
  const t = setup({ options: { autoTrack: true } });
  try {
    await t.hl.optOut();
    await t.hl.eraseMe();
    assert.deepStrictEqual(Array.from(t.env.storage.keys()), ['huiliu:optout']);
    assert.strictEqual(t.hl.track('search'), null);
    const n = t.env.requests.length;
    t.env.hide();
    t.env.show();
    await t.clock.tick(60000);
    assert.strictEqual(t.env.requests.length, n);
    assert.strictEqual(t.env.api.users.size, 0, 'no new user was created');
  } finally {
    t.done();
  }
});

test('myData returns the export', async () => {
  const t = setup();
  try {
    t.hl.track('search');
    await t.hl.flush();
    const d = await t.hl.myData();
    assert.strictEqual(d.events.length, 1);
  } finally {
    t.done();
  }
});
