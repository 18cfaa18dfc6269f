'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { setup } = require('./helpers');
const { err } = require('../shim/api');

function settled(p) {
  return p.then((v) => ({ ok: v }), (e) => ({ err: e }));
}

test('claim: retried with the same idempotency id after a lost answer; one coupon', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    t.env.script('/claim', ['lose', err(503, 'busy')]);
    const p = settled(t.hl.coupons.claim(1));
    await t.clock.tick(2000);
    const r = await p;
    assert.ok(r.ok, String(r.err));
    assert.strictEqual(r.ok.template_id, 1);
    const ids = t.env.sent('/claim').map((x) => x.data.id);
    assert.strictEqual(ids.length, 3);
    assert.ok(ids[0] && ids.every((x) => x === ids[0]), JSON.stringify(ids));
    assert.strictEqual(t.env.api.users.get('o_tester').coupons.length, 1);
    assert.deepStrictEqual(t.env.stored('outbox'), [], 'answered: out of the outbox');
  } finally {
    t.done();
  }
});

test('claim: kept in storage when unanswered and sent with the same id after a restart', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    t.env.script('/claim', ['lose', 'lose', 'lose']);
    const p = settled(t.hl.coupons.claim(1));
    await t.clock.tick(2000);
    const r = await p;
    assert.ok(r.err.pending, 'rejected as pending');
    assert.strictEqual(r.err.retryable, true);
    const stored = t.env.stored('outbox');
    assert.strictEqual(stored.length, 1);
    assert.deepStrictEqual(stored[0].body, { template_id: 1, id: stored[0].id });
    const env1 = t.env;
    const { env } = t.restart();
    await t.clock.tick(100);
    const ids = env1.sent('/claim').map((x) => x.data.id).concat(env.sent('/claim').map((x) => x.data.id));
    assert.strictEqual(ids.length, 4);
    assert.ok(ids.every((x) => x === stored[0].id));
    assert.strictEqual(env.api.users.get('o_tester').coupons.length, 1);
    assert.deepStrictEqual(env.stored('outbox'), []);
  } finally {
    t.done();
  }
});

test('claim: tapping again while a claim for that template waits is the same claim', async () => {
  const t = setup();
  try {
    await t.hl.login();
    t.env.script('/claim', ['hold']);
    const a = t.hl.coupons.claim(1);
    const b = t.hl.coupons.claim(1);
    await t.clock.tick(10);
    t.env.release();
    const [ca, cb] = await Promise.all([a, b]);
    assert.strictEqual(ca.id, cb.id);
    assert.strictEqual(t.env.sent('/claim').length, 1);
  } finally {
    t.done();
  }
});

test('claim: a refusal (409) is final and leaves the outbox', async () => {
  const t = setup();
  try {
    await t.hl.coupons.claim(1);
    const r = await settled(t.hl.coupons.claim(1));
    assert.strictEqual(r.err.status, 409);
    assert.strictEqual(r.err.code, 'per_user_limit');
    assert.strictEqual(r.err.retryable, false);
    assert.deepStrictEqual(t.env.stored('outbox'), []);
    await assert.rejects(t.hl.coupons.claim('1'), (e) => e.code === 'invalid_request');
  } finally {
    t.done();
  }
});

test('requestSubscribe: posts the answers with an id kept across retries and a restart', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    t.env.subscribeAnswer = (ids) => ({ errMsg: 'requestSubscribeMessage:ok', [ids[0]]: 'accept', [ids[1]]: 'reject' });
    t.env.script('/subscriptions', ['lose', 'lose', 'lose']);
    const r = await (async () => {
      const p = settled(t.hl.requestSubscribe(['T1', 'T2']));
      await t.clock.tick(2000);
      return p;
    })();
    assert.ok(r.err && r.err.pending);
    const first = t.env.sent('/subscriptions');
    assert.strictEqual(first.length, 3);
    assert.deepStrictEqual(first[0].data.results, { T1: 'accept', T2: 'reject' });
    const id = first[0].data.id;
    assert.ok(first.every((x) => x.data.id === id));
    const { env, hl } = t.restart();
    await t.clock.tick(100);
    assert.strictEqual(env.sent('/subscriptions')[0].data.id, id);
    assert.deepStrictEqual(env.api.users.get('o_tester').allowances, { T1: 1 }, 'counted once');
    assert.deepStrictEqual(env.stored('outbox'), []);
    // a new prompt is a new answer with a new id
    env.subscribeAnswer = () => ({ errMsg: 'requestSubscribeMessage:ok', T1: 'accept' });
    const again = await hl.requestSubscribe('T1');
    assert.deepStrictEqual(again, { allowances: { T1: 2 }, duplicate: false });
    assert.notStrictEqual(env.sent('/subscriptions')[1].data.id, id);
  } finally {
    t.done();
  }
});

test('requestSubscribe: the prompt is shown before anything else and its failure rejects', async () => {
  const t = setup();
  try {
    const order = [];
    const own = t.env.wx.requestSubscribeMessage;
    t.env.wx.requestSubscribeMessage = (p) => {
      order.push('prompt:' + t.env.requests.length);
      own(p);
    };
    await t.hl.requestSubscribe(['T1']);
    assert.deepStrictEqual(order, ['prompt:0'], 'no request (not even login) before the prompt');
    t.env.subscribeAnswer = () => ({ fail: { errMsg: 'requestSubscribeMessage:fail can only be invoked by user TAP gesture.', errCode: 20004 } });
    const r = await settled(t.hl.requestSubscribe(['T1']));
    assert.strictEqual(r.err.code, 'subscribe_failed');
    assert.strictEqual(r.err.errCode, 20004);
    await assert.rejects(t.hl.requestSubscribe(['a', 'b', 'c', 'd']), (e) => e.code === 'invalid_request');
  } finally {
    t.done();
  }
});

test('redeem: retried with the same body after a lost answer', async () => {
  const t = setup({ options: { retryBase: 100 } });
  try {
    const c = await t.hl.coupons.claim(1);
    t.env.script('/redeem', ['lose']);
    const p = settled(t.hl.coupons.redeem(c.id, { orderId: 'A123', amountFen: 2000 }));
    await t.clock.tick(1000);
    const r = await p;
    assert.ok(r.ok, String(r.err));
    assert.strictEqual(r.ok.status, 'redeemed');
    const bodies = t.env.sent('/redeem').map((x) => x.data);
    assert.deepStrictEqual(bodies, [{ order_id: 'A123', order_amount_fen: 2000 }, { order_id: 'A123', order_amount_fen: 2000 }]);
    assert.strictEqual(t.env.sent('/redeem')[0].path, '/mp/v1/coupons/' + c.id + '/redeem');
  } finally {
    t.done();
  }
});

test('coupons.list and reengagement return the arrays', async () => {
  const t = setup({ env: { apiOptions: { cards: [{ id: 5, title: null, text: '好久不见', page: null, coupon_id: null }] } } });
  try {
    await t.hl.coupons.claim(1);
    assert.strictEqual((await t.hl.coupons.list()).length, 1);
    assert.deepStrictEqual((await t.hl.reengagement()).map((c) => c.id), [5]);
    assert.deepStrictEqual(await t.hl.reengagement(), []);
  } finally {
    t.done();
  }
});
