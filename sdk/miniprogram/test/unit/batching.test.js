'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { setup, events } = require('./helpers');

test('sends when batchSize events wait, not before', async () => {
  const t = setup({ options: { batchSize: 5, flushInterval: 60000 } });
  try {
    for (let i = 0; i < 4; i++) t.hl.track('search', { i: i });
    await t.clock.tick(1000);
    assert.strictEqual(t.env.sent('/events').length, 0);
    t.hl.track('search', { i: 4 });
    await t.clock.tick(10);
    const reqs = t.env.sent('POST /mp/v1/events');
    assert.strictEqual(reqs.length, 1);
    assert.deepStrictEqual(reqs[0].data.events.map((e) => e.props.i), [0, 1, 2, 3, 4]);
    assert.strictEqual(t.hl.stats().queued, 0);
    assert.strictEqual(t.hl.stats().sent, 5);
  } finally {
    t.done();
  }
});

test('sends after flushInterval when fewer than batchSize wait', async () => {
  const t = setup({ options: { batchSize: 20, flushInterval: 5000 } });
  try {
    const id = t.hl.track('like', { post: 7 });
    assert.match(id, /^e[0-9a-f]{12}-\d+$/);
    await t.clock.tick(4900);
    assert.strictEqual(t.env.sent('/events').length, 0);
    await t.clock.tick(200);
    assert.strictEqual(t.env.sent('/events').length, 1);
    assert.deepStrictEqual(events(t.env).map((e) => e.id), [id]);
  } finally {
    t.done();
  }
});

test('defaults: batchSize 20, flushInterval 5000, maxBatch 100', async () => {
  const t = setup();
  try {
    for (let i = 0; i < 19; i++) t.hl.track('search');
    await t.clock.tick(4000);
    assert.strictEqual(t.env.sent('/events').length, 0, '19 < batchSize 20');
    t.hl.track('search');
    await t.clock.tick(1);
    assert.strictEqual(t.env.sent('/events').length, 1, 'the 20th event sends');
    t.hl.track('search');
    await t.clock.tick(4990);
    assert.strictEqual(t.env.sent('/events').length, 1);
    await t.clock.tick(20);
    assert.strictEqual(t.env.sent('/events').length, 2, 'after 5000 ms');
    for (let i = 0; i < 250; i++) t.hl.track('search');
    await t.hl.flush();
    assert.deepStrictEqual(t.env.sent('/events').slice(2).map((r) => r.data.events.length), [100, 100, 50]);
  } finally {
    t.done();
  }
});

test('flush splits into maxBatch-sized requests and reports what it did', async () => {
  const t = setup({ options: { maxBatch: 3, batchSize: 100, flushInterval: 60000 } });
  try {
    const ids = [];
    for (let i = 0; i < 7; i++) ids.push(t.hl.track('search', { i: i }));
    const summary = await t.hl.flush();
    assert.deepStrictEqual(summary, { sent: 7, rejected: 0, pending: 0 });
    const reqs = t.env.sent('POST /mp/v1/events');
    assert.deepStrictEqual(reqs.map((r) => r.data.events.length), [3, 3, 1]);
    assert.deepStrictEqual(events(t.env).map((e) => e.id), ids, 'oldest first, each once');
  } finally {
    t.done();
  }
});

test('maxBatch is capped at 500, the API limit', async () => {
  const t = setup({ options: { maxBatch: 100000, batchSize: 5000, maxQueue: 5000, flushInterval: 60000 } });
  try {
    for (let i = 0; i < 1200; i++) t.hl.track('search');
    await t.hl.flush();
    const sizes = t.env.sent('POST /mp/v1/events').map((r) => r.data.events.length);
    assert.deepStrictEqual(sizes, [500, 500, 200]);
    assert.strictEqual(t.env.api.stored().length, 1200);
  } finally {
    t.done();
  }
});

test('every events request carries sent_at, fresh on each attempt', async () => {
  const t = setup({ options: { retryBase: 1000 } });
  try {
    t.env.script('/events', [{ status: 503 }]);
    t.hl.track('search');
    t.hl.flush();
    await t.clock.tick(10);
    const first = t.env.sent('/events')[0];
    await t.clock.until(() => t.env.sent('/events').length === 2, 10000);
    const second = t.env.sent('/events')[1];
    for (const r of [first, second]) {
      assert.strictEqual(typeof r.data.sent_at, 'number');
      assert.strictEqual(r.data.sent_at, r.at, 'sent_at is the time the request left');
    }
    assert.ok(second.data.sent_at > first.data.sent_at);
    assert.strictEqual(second.data.events[0].id, first.data.events[0].id, 'same event id on the retry');
    assert.strictEqual(t.hl.stats().queued, 0);
  } finally {
    t.done();
  }
});

test('refused events: unknown types, oversized props, non-object props', () => {
  const t = setup();
  try {
    assert.strictEqual(t.hl.track('serch'), null);
    assert.strictEqual(t.hl.track(''), null);
    assert.strictEqual(t.hl.track(42), null);
    assert.strictEqual(t.hl.track('custom:'), null);
    assert.match(t.hl.track('custom:tap_banner'), /^e/);
    assert.strictEqual(t.hl.track('search', { q: 'x'.repeat(3000) }), null);
    assert.strictEqual(t.hl.track('search', [1, 2]), null);
    const loop = {};
    loop.self = loop;
    assert.strictEqual(t.hl.track('search', loop), null);
    assert.strictEqual(t.hl.stats().queued, 1);
  } finally {
    t.done();
  }
});

test('the event keeps the props as they were when tracked', async () => {
  const t = setup();
  try {
    const props = { q: 'tea' };
    t.hl.track('search', props);
    props.q = 'changed';
    await t.hl.flush();
    const e = events(t.env)[0];
    assert.deepStrictEqual(e.props, { q: 'tea' });
    assert.strictEqual(e.ts, t.env.requests[0].at);
    assert.deepStrictEqual(Object.keys(e).sort(), ['id', 'props', 'ts', 'type']);
  } finally {
    t.done();
  }
});
