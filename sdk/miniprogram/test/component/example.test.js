'use strict';
// The example mini-program (example/app.js and its two pages) run against the real SDK and the
// in-memory wx + fake /mp/v1 API: the code the README shows has to work as written.
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const Module = require('module');
const { createWx } = require('../shim/wx');

const ROOT = path.join(__dirname, '..', '..');
const EXAMPLE = path.join(ROOT, 'example');

// `require('huiliu-miniprogram')` in the example is this package (WeChat's 构建 npm does it there).
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request) {
  if (request === 'huiliu-miniprogram') return path.join(ROOT, 'src', 'index.js');
  return resolve.apply(this, arguments);
};

const env = createWx({ openid: 'o_example', launch: { path: 'pages/index/index', scene: 1001, query: {} } });
const ui = { toasts: [], modals: [], navigations: [] };
global.wx = Object.assign(env.wx, {
  showToast: (o) => ui.toasts.push(o.title),
  showModal: (o) => {
    ui.modals.push(o);
    if (o.success) o.success({ confirm: true, cancel: false });
  },
  navigateTo: (o) => ui.navigations.push(o.url),
  stopPullDownRefresh: () => {},
});

let app = null;
global.App = (def) => {
  app = def;
};
global.getApp = () => app;
const pages = {};
let registering = null;
global.Page = (def) => {
  pages[registering] = def;
  return def;
};

const realLog = console.log;
const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};
async function until(cond, what) {
  for (let waited = 0; !cond(); waited += 5) {
    if (waited > 3000) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 5));
  }
}
// Runs fn (a tap) and waits for the toast it ends with; gives that toast's text.
async function toastOf(fn) {
  const before = ui.toasts.length;
  fn();
  for (let waited = 0; ui.toasts.length === before; waited += 5) {
    if (waited > 3000) throw new Error('no toast after 3 s; toasts so far: ' + ui.toasts.join(','));
    await new Promise((r) => setTimeout(r, 5));
  }
  await settle(); // what follows the toast (a refresh of the list) settles too
  return ui.toasts[ui.toasts.length - 1];
}

// A page instance as WeChat makes one: the definition's methods, data, route and setData.
function open(route, query) {
  registering = route;
  require(path.join(EXAMPLE, route));
  const def = pages[route];
  const page = Object.assign({}, def, {
    route: route,
    options: query,
    data: JSON.parse(JSON.stringify(def.data || {})),
    setData(d) {
      Object.assign(this.data, d);
    },
  });
  page.onLoad && page.onLoad(query);
  page.onShow && page.onShow();
  return page;
}

function storedTypes() {
  return env.api.stored().map((pair) => pair[1].type);
}

test('app.js inits the SDK in ten lines and pages reach the client as getApp().hl', () => {
  console.log = () => {}; // the example turns debug on
  require(path.join(EXAMPLE, 'app.js'));
  assert.ok(app && app.hl, 'App({ hl }) was called with the client');
  assert.strictEqual(require('huiliu-miniprogram').init(), app.hl, 'init() again gives the same client');
  assert.strictEqual(typeof app.hl.track, 'function');
});

test('the home page tracks, subscribes and shares; the wrapper adds page_view and message_open', async () => {
  const page = open('pages/index/index', { touch_id: '77' });
  page.onKeywordInput({ detail: { value: '麻辣香锅' } });
  page.onSearch();
  page.onAddToCart({ currentTarget: { dataset: { item: 'bubble-tea' } } });
  assert.strictEqual(await toastOf(() => page.onSubscribe()), '订阅成功，上新时提醒你');
  const share = page.onShareAppMessage();
  assert.strictEqual(share.path, '/pages/index/index');
  const summary = await app.hl.flush();
  assert.strictEqual(summary.pending, 0);
  const types = storedTypes();
  ['app_open', 'message_open', 'page_view', 'search', 'add_to_cart', 'share'].forEach((t) => {
    assert.ok(types.indexOf(t) >= 0, t + ' stored: ' + types.join(','));
  });
  const search = env.api.stored().find((p) => p[1].type === 'search')[1];
  assert.deepStrictEqual(search.props, { query: '麻辣香锅' });
  const opened = env.api.stored().find((p) => p[1].type === 'message_open')[1];
  assert.strictEqual(String(opened.props.touch_id), '77');
  assert.strictEqual(env.sent('POST /mp/v1/subscriptions').length, 1);
});

test('the coupon page lists and claims; refusals show the API code in Chinese', async () => {
  const page = open('pages/coupons/index', {});
  await until(() => page.data.loading === false, 'the coupon list');
  assert.strictEqual(page.data.loading, false);
  assert.deepStrictEqual(page.data.mine, []);

  assert.strictEqual(await toastOf(() => page.onClaim({ currentTarget: { dataset: { id: 1 } } })), '领取成功：新人立减5元');
  assert.strictEqual(page.data.mine.length, 1);
  assert.strictEqual(page.data.mine[0].amount, '5');
  assert.strictEqual(page.data.mine[0].rule, '满15元可用');
  assert.strictEqual(page.data.claiming, 0);

  assert.strictEqual(await toastOf(() => page.onClaim({ currentTarget: { dataset: { id: 1 } } })), '你已经领过这张券了');

  // Template 4 is not one of the fake API's.
  assert.strictEqual(await toastOf(() => page.onClaim({ currentTarget: { dataset: { id: 4 } } })), '券不存在');

  await app.hl.flush();
  assert.ok(storedTypes().indexOf('coupon_view') >= 0);
});

test('privacy buttons: opt-out stops tracking, my data, erase', async () => {
  const page = pages['pages/index/index'];
  const home = Object.assign({}, page, {
    route: 'pages/index/index',
    data: { keyword: '', optedOut: false },
    setData(d) {
      Object.assign(this.data, d);
    },
  });
  assert.strictEqual(await toastOf(() => home.onOptOut()), '已关闭个性化推荐');
  assert.strictEqual(home.data.optedOut, true);
  assert.strictEqual(app.hl.track('search', { query: 'x' }), null);
  assert.strictEqual(await toastOf(() => home.onOptIn()), '已开启个性化推荐');
  assert.strictEqual(home.data.optedOut, false);
  assert.strictEqual(typeof app.hl.track('search', { query: 'y' }), 'string');

  const modals = ui.modals.length;
  home.onMyData();
  await until(() => ui.modals.length > modals, 'the my-data modal');
  const modal = ui.modals[ui.modals.length - 1];
  assert.strictEqual(modal.title, '我的数据');
  assert.match(modal.content, /行为记录 \d+ 条/);

  assert.strictEqual(await toastOf(() => home.onErase()), '已删除');
  assert.strictEqual(env.sent('DELETE /mp/v1/me').length, 1);
  assert.deepStrictEqual(env.api.stored().filter((p) => p[0] === 'o_example'), []);
  console.log = realLog;
});
