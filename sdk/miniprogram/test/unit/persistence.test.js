'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { setup, events } = require('./helpers');

test('a restart on the same storage sends what the first run queued', async () => {
  const t = setup({ options: { flushInterval: 60000 } });
  try {
    const ids = [t.hl.track('search', { q: 'a' }), t.hl.track('like'), t.hl.track('comment')];
    await t.clock.tick(400); // past persistDelay (300 ms): written
    assert.strictEqual(t.env.sent('/events').length, 0);
    const { env, hl } = t.restart();
    assert.strictEqual(hl.stats().queued, 3);
    const s = await hl.flush();
    assert.deepStrictEqual(s, { sent: 3, rejected: 0, pending: 0 });
    assert.deepStrictEqual(events(env).map((e) => e.id), ids);
    const next = hl.track('search');
    assert.ok(ids.indexOf(next) < 0, 'new ids after the restart');
    assert.ok(Number(next.split('-')[1]) > 3, 'the counter continued');
  } finally {
    t.done();
  }
});

test('writes are debounced by persistDelay, but immediate on flush and hide', async () => {
  const t = setup({ options: { flushInterval: 60000, persistDelay: 300 } });
  try {
    t.hl.track('search');
    assert.strictEqual(t.env.stored('queue'), undefined);
    await t.clock.tick(299);
    assert.strictEqual(t.env.stored('queue'), undefined);
    await t.clock.tick(2);
    assert.strictEqual(t.env.stored('queue').events.length, 1);
    t.hl.track('like');
    t.env.hide();
    assert.strictEqual(t.env.stored('queue').events.length, 2, 'written at once on hide');
    t.env.show();
    t.hl.track('comment');
    t.env.script('/events', ['hold']);
    const f = t.hl.flush();
    assert.ok(t.env.stored('queue').events.length >= 1, 'written at once on flush');
    await t.clock.tick(10);
    t.env.release();
    await f;
  } finally {
    t.done();
  }
});

test('a batch whose answer was lost is resent after a restart and stored once', async () => {
  const t = setup({ options: { flushInterval: 60000 } });
  try {
    t.env.script('/events', ['lose']);
    const ids = [t.hl.track('search'), t.hl.track('like')];
    const s = await t.hl.flush();
    assert.deepStrictEqual(s, { sent: 0, rejected: 0, pending: 2 });
    assert.strictEqual(t.env.api.stored().length, 2, 'the server stored them, the phone never heard');
    const { hl } = t.restart();
    await hl.flush();
    assert.strictEqual(t.env.api.stored().length, 2, 'stored once');
    assert.deepStrictEqual(t.env.api.stored().map((x) => x[1].id).sort(), ids.slice().sort());
    assert.strictEqual(hl.stats().duplicates, 2);
    assert.strictEqual(hl.stats().queued, 0);
  } finally {
    t.done();
  }
});

test('the queue is bounded by count: oldest dropped, counted, and the count survives a restart', async () => {
  const t = setup({ options: { maxQueue: 10, batchSize: 100, flushInterval: 60000 } });
  try {
    const ids = [];
    for (let i = 0; i < 15; i++) ids.push(t.hl.track('search', { i: i }));
    assert.strictEqual(t.hl.stats().queued, 10);
    assert.strictEqual(t.hl.stats().dropped, 5);
    await t.clock.tick(400);
    assert.deepStrictEqual(t.env.stored('queue').events.map((e) => e.id), ids.slice(5), 'the oldest five went');
    assert.strictEqual(t.env.stored('stats').dropped, 5);
    const { hl, env } = t.restart({ maxQueue: 10 });
    assert.strictEqual(hl.stats().dropped, 5, 'dropped is persisted');
    await hl.flush();
    assert.deepStrictEqual(events(env).map((e) => e.props.i), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
  } finally {
    t.done();
  }
});

test('the queue is bounded by bytes (UTF-8 JSON of the stored value)', async () => {
  const t = setup({ options: { maxQueueBytes: 8192, maxQueue: 10000, batchSize: 10000, flushInterval: 60000 } });
  try {
    const big = '惠'.repeat(200); // 600 bytes in UTF-8
    for (let i = 0; i < 40; i++) t.hl.track('search', { q: big, i: i });
    await t.clock.tick(400);
    const text = t.env.storage.get('huiliu:queue');
    const stored = JSON.parse(JSON.parse(text));
    assert.ok(Buffer.byteLength(JSON.parse(text)) <= 8192, 'stored queue over maxQueueBytes');
    assert.ok(stored.events.length < 40 && stored.events.length > 5);
    assert.strictEqual(t.hl.stats().dropped, 40 - stored.events.length);
    assert.strictEqual(stored.events[stored.events.length - 1].props.i, 39, 'the newest is kept');
    assert.strictEqual(stored.events[0].props.i, 40 - stored.events.length, 'the oldest went');
  } finally {
    t.done();
  }
});

test('the stored queue never exceeds WeChat\'s 1 MB per key, whatever the options say', async () => {
  const t = setup({ options: { maxQueueBytes: 50 * 1024 * 1024, maxQueue: 100000, batchSize: 100000, flushInterval: 3600000 } });
  try {
    const big = '惠'.repeat(650); // ~1950 bytes, just under the 2 KB props limit
    for (let i = 0; i < 700; i++) assert.ok(t.hl.track('search', { q: big }));
    t.env.hide(); // written at once
    await t.clock.tick(400);
    assert.deepStrictEqual(t.warnings.filter((w) => /storage write failed/.test(w)), []);
    const raw = t.env.storage.get('huiliu:queue');
    assert.ok(raw, 'the queue was written');
    assert.ok(Buffer.byteLength('huiliu:queue') + Buffer.byteLength(raw) <= 1024 * 1024);
    assert.ok(t.hl.stats().dropped > 0);
  } finally {
    t.done();
  }
});

test('the shim refuses what WeChat refuses (1 MB per key, 10 MB in all)', () => {
  const { createWx } = require('../shim/wx');
  const env = createWx();
  assert.throws(() => env.wx.setStorageSync('k', 'x'.repeat(1024 * 1024)), /exceed storage item max length/);
  for (let i = 0; i < 10; i++) env.wx.setStorageSync('k' + i, 'x'.repeat(1000 * 1000));
  assert.throws(() => env.wx.setStorageSync('k10', 'x'.repeat(600 * 1000)), /exceed storage max size/);
  assert.strictEqual(env.wx.getStorageSync('missing'), '');
});

test('a storage failure is logged, never thrown into the app', async () => {
  const t = setup({ options: { flushInterval: 60000 } });
  try {
    t.env.wx.setStorageSync = () => {
      throw new Error('setStorageSync:fail exceed storage max size 10MB');
    };
    assert.ok(t.hl.track('search'));
    await t.clock.tick(400); // the debounced write fails
    assert.ok(t.warnings.some((w) => /storage write failed/.test(w)));
    assert.strictEqual(t.hl.stats().queued, 1, 'still queued in memory');
    await t.hl.flush();
    assert.strictEqual(t.env.api.stored().length, 1, 'and still sent');
  } finally {
    t.done();
  }
});
