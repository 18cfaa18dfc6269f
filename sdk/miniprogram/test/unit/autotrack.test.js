'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { setup, events } = require('./helpers');
const { installPage } = require('../shim/wx');

function types(env) {
  return events(env).map((e) => e.type);
}

function pageSetup(opts) {
  const page = installPage();
  const t = setup(opts);
  const done = t.done;
  t.done = () => {
    done();
    page.uninstall();
  };
  t.page = page;
  return t;
}

test('app_open at launch (once, not again on the first show), session_end on hide, app_open on the next show', async () => {
  const t = setup({
    options: { autoTrack: true },
    env: { launch: { path: 'pages/home/home', scene: 1011, query: {} } }
  });
  try {
    t.env.show({ path: 'pages/home/home', scene: 1011 }); // WeChat's show right after launch
    await t.clock.tick(42000);
    t.env.hide();
    await t.clock.tick(10);
    assert.deepStrictEqual(t.env.sent('/events').pop().data.events.map((e) => e.type), ['session_end'],
      'the hide sent the queue at once');
    t.env.show({ path: 'pages/cart/cart', scene: 1089 });
    await t.hl.flush();
    const ev = events(t.env);
    assert.deepStrictEqual(ev.map((e) => e.type), ['app_open', 'session_end', 'app_open']);
    assert.deepStrictEqual(ev[0].props, { scene: 1011, path: 'pages/home/home' });
    assert.deepStrictEqual(ev[1].props, { duration_s: 42 });
    assert.deepStrictEqual(ev[2].props, { scene: 1089, path: 'pages/cart/cart' });
  } finally {
    t.done();
  }
});

test('page_view through the Page wrapper, which still calls the page\'s own methods', async () => {
  const t = pageSetup({ options: { autoTrack: true } });
  try {
    const calls = [];
    const def = Page({
      data: {},
      onLoad(q) { calls.push(['load', q]); },
      onShow() { calls.push(['show']); return 'own'; }
    });
    assert.strictEqual(t.page.pages.length, 1, 'the original Page still registers the page');
    const inst = { route: 'pages/menu/menu' };
    def.onLoad.call(inst, { cat: 'tea' });
    assert.strictEqual(def.onShow.call(inst), 'own');
    def.onShow.call(inst);
    const bare = Page({}); // a page without onShow still gets page_view
    bare.onShow.call({ route: 'pages/about/about', options: { from: 'x' } });
    await t.hl.flush();
    const views = events(t.env).filter((e) => e.type === 'page_view').map((e) => e.props);
    assert.deepStrictEqual(views, [
      { page: 'pages/menu/menu', query: { cat: 'tea' } },
      { page: 'pages/menu/menu', query: { cat: 'tea' } },
      { page: 'pages/about/about', query: { from: 'x' } }
    ]);
    assert.deepStrictEqual(calls, [['load', { cat: 'tea' }], ['show'], ['show']]);
  } finally {
    t.done();
  }
});

test('share from the page\'s onShareAppMessage; no share hook is added where the page has none', async () => {
  const t = pageSetup({ options: { autoTrack: true } });
  try {
    const def = Page({ onShareAppMessage() { return { title: '请你喝奶茶' }; } });
    assert.deepStrictEqual(def.onShareAppMessage.call({ route: 'pages/tea/tea' }, { from: 'menu' }), { title: '请你喝奶茶' });
    const plain = Page({});
    assert.strictEqual(plain.onShareAppMessage, undefined);
    await t.hl.flush();
    assert.deepStrictEqual(events(t.env).filter((e) => e.type === 'share').map((e) => e.props), [{ page: 'pages/tea/tea' }]);
  } finally {
    t.done();
  }
});

test('message_open from the launch, show and page query, once per touch id (also across a restart)', async () => {
  const t = pageSetup({
    options: { autoTrack: true },
    env: { launch: { path: 'pages/coupon/coupon', scene: 1014, query: { touch_id: '101' } } }
  });
  try {
    t.env.show({ path: 'pages/coupon/coupon', scene: 1014, query: { touch_id: '101' } }); // same open
    const def = Page({});
    def.onLoad.call({ route: 'pages/coupon/coupon' }, { touch_id: '101' }); // and its page
    t.env.hide();
    t.env.show({ path: 'pages/tea/tea', scene: 1043, query: { touch_id: '102' } });
    def.onLoad.call({ route: 'pages/news/news' }, { touch_id: 'abc' });
    def.onLoad.call({ route: 'pages/news/news' }, { other: '1' });
    await t.hl.flush();
    const opens = events(t.env).filter((e) => e.type === 'message_open').map((e) => e.props);
    assert.deepStrictEqual(opens, [
      { touch_id: 101, page: 'pages/coupon/coupon' },
      { touch_id: 102, page: 'pages/tea/tea' },
      { touch_id: 'abc', page: 'pages/news/news' }
    ]);
    assert.strictEqual(t.hl.track('message_open', { touch_id: 102 }), null, 'track() follows the same rule');
    await t.clock.tick(400); // the sent events leave storage too
    const { env, hl } = t.restart({ autoTrack: true }); // launched again from the same message
    env.hide();
    env.show({ query: { touch_id: '101' } });
    await hl.flush();
    assert.deepStrictEqual(events(env).filter((e) => e.type === 'message_open'), []);
    assert.deepStrictEqual(types(env), ['app_open', 'session_end', 'app_open']);
  } finally {
    t.done();
  }
});

test('the seen touch ids kept are the last 50', async () => {
  const t = setup({ options: { autoTrack: true } });
  try {
    for (let i = 1; i <= 60; i++) t.env.show({ query: { touch_id: String(i) } });
    const seen = t.env.stored('seen_touches');
    assert.strictEqual(seen.length, 50);
    assert.strictEqual(seen[0], '11');
    assert.strictEqual(seen[49], '60');
  } finally {
    t.done();
  }
});

test('each automatic event can be switched off', async () => {
  const t = pageSetup({
    options: { autoTrack: { appOpen: false, pageView: false, share: true, sessionEnd: false, messageOpen: true } },
    env: { launch: { path: 'p', scene: 1014, query: { touch_id: '7' } } }
  });
  try {
    const def = Page({ onShareAppMessage() {} });
    def.onLoad.call({ route: 'p' }, {});
    def.onShow.call({ route: 'p' });
    def.onShareAppMessage.call({ route: 'p' });
    t.env.hide();
    t.env.show({});
    await t.hl.flush();
    assert.deepStrictEqual(types(t.env), ['message_open', 'share']);
  } finally {
    t.done();
  }
  const t2 = pageSetup({ options: { autoTrack: false } });
  try {
    const def = Page({ onShow() {} });
    def.onShow.call({ route: 'p' });
    t2.env.hide();
    t2.env.show({ query: { touch_id: '9' } });
    await t2.hl.flush();
    assert.deepStrictEqual(types(t2.env), []);
  } finally {
    t2.done();
  }
});
