'use strict';
// The example's re-engagement card, rendered by miniprogram-simulate under jsdom: it shows
// the cards reengagement() returns with their coupons, and a tap opens the card's page with
// touch_id in the query (which is what lets the SDK's Page wrapper track message_open).
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');

require('global-jsdom/register');
// Node's own Event/EventTarget break j-component's dispatch; use jsdom's.
global.Event = window.Event;
global.CustomEvent = window.CustomEvent;
global.EventTarget = window.EventTarget;

// The wx shim: set before miniprogram-simulate is required, whose mocks then leave ours in place.
const calls = { navigateTo: [], reLaunch: [] };
let navigateFails = false;
global.wx = {
  navigateTo(opts) {
    calls.navigateTo.push(opts.url);
    if (navigateFails && opts.fail) opts.fail({ errMsg: 'navigateTo:fail can not navigateTo a tabbar page' });
    else if (opts.success) opts.success({ errMsg: 'navigateTo:ok' });
  },
  reLaunch(opts) {
    calls.reLaunch.push(opts.url);
  },
};
const simulate = require('miniprogram-simulate');

const CARD = path.join(__dirname, '..', '..', 'example', 'components', 'reengagement-card', 'index');

const COUPONS = [
  {
    id: 41, template_id: 3, name: '新人立减5元', amount_off_fen: 500, min_spend_fen: 1500,
    merchant: null, status: 'issued', issued_at: '2026-03-01T10:00:00+08:00',
    expires_at: '2026-03-31T10:00:00+08:00', redeemed_at: null, order_id: null,
  },
  {
    id: 42, template_id: 4, name: '奶茶第二杯减6元', amount_off_fen: 650, min_spend_fen: 0,
    merchant: 'milk-tea', status: 'issued', issued_at: '2026-03-01T10:00:00+08:00',
    expires_at: '2026-03-08T10:00:00+08:00', redeemed_at: null, order_id: null,
  },
];

// A fake Huiliu client with the two calls the card uses.
function fakeClient(cards) {
  const seen = { reengagement: 0, coupons: 0 };
  return {
    seen,
    reengagement() {
      seen.reengagement += 1;
      return Promise.resolve(cards);
    },
    coupons: {
      list() {
        seen.coupons += 1;
        return Promise.resolve(COUPONS);
      },
    },
  };
}

let app = {};
global.getApp = () => app;
const cardId = simulate.load(CARD);

async function mount(cards) {
  const hl = fakeClient(cards);
  app = { hl };
  const comp = simulate.render(cardId);
  comp.attach(document.createElement('parent-wrapper'));
  // reengagement() then coupons.list() then setData: let the promise chain settle.
  for (let i = 0; i < 5; i++) await simulate.sleep(0);
  return { comp, hl };
}

function text(node) {
  return node.dom.textContent.replace(/\s+/g, ' ').trim();
}

test('renders every card with its title, text and coupon', async () => {
  const { comp, hl } = await mount([
    { id: 7, title: '好久不见', text: '你的新人券还没用', page: 'pages/coupons/index', coupon_id: 41 },
    { id: 8, title: null, text: '新品奶茶上架', page: null, coupon_id: null },
  ]);
  assert.strictEqual(hl.seen.reengagement, 1);
  const cards = comp.querySelectorAll('.hl-card');
  assert.strictEqual(cards.length, 2);

  const first = text(cards[0]);
  assert.match(first, /好久不见/);
  assert.match(first, /你的新人券还没用/);
  assert.match(first, /新人立减5元/);
  assert.match(first, /¥\s*5/);
  assert.match(first, /满15元可用/);
  assert.match(first, /2026-03-31 到期/);
  assert.match(first, /去看看/);

  const second = text(cards[1]);
  assert.match(second, /欢迎回来/); // a card without a title gets the default one
  assert.match(second, /新品奶茶上架/);
  assert.strictEqual(cards[1].querySelector('.hl-card__coupon'), undefined);
  assert.strictEqual(cards[1].querySelector('.hl-card__action'), undefined);
});

test('a tap opens the card page with touch_id in the query and removes the card', async () => {
  calls.navigateTo.length = 0;
  const { comp } = await mount([
    { id: 7, title: '好久不见', text: 'a', page: 'pages/coupons/index', coupon_id: 41 },
    { id: 9, title: '奶茶', text: 'b', page: '/pages/index/index?from=card', coupon_id: 42 },
  ]);
  const opened = [];
  comp.addEventListener('open', (e) => opened.push(e.detail));

  comp.querySelectorAll('.hl-card')[0].dispatchEvent('tap');
  await simulate.sleep(0);
  assert.deepStrictEqual(calls.navigateTo, ['/pages/coupons/index?touch_id=7']);
  assert.deepStrictEqual(opened, [{ touchId: 7, url: '/pages/coupons/index?touch_id=7' }]);
  assert.strictEqual(comp.querySelectorAll('.hl-card').length, 1);

  // A page that already has a query gets touch_id appended with '&'.
  comp.querySelectorAll('.hl-card')[0].dispatchEvent('tap');
  await simulate.sleep(0);
  assert.deepStrictEqual(calls.navigateTo, [
    '/pages/coupons/index?touch_id=7',
    '/pages/index/index?from=card&touch_id=9',
  ]);
  assert.strictEqual(comp.querySelectorAll('.hl-card').length, 0);
});

test('a tabBar page (navigateTo fails) is opened with reLaunch, touch_id kept', async () => {
  calls.navigateTo.length = 0;
  calls.reLaunch.length = 0;
  navigateFails = true;
  try {
    const { comp } = await mount([{ id: 12, title: 't', text: 'x', page: 'pages/index/index', coupon_id: null }]);
    comp.querySelector('.hl-card').dispatchEvent('tap');
    await simulate.sleep(0);
    assert.deepStrictEqual(calls.navigateTo, ['/pages/index/index?touch_id=12']);
    assert.deepStrictEqual(calls.reLaunch, ['/pages/index/index?touch_id=12']);
  } finally {
    navigateFails = false;
  }
});

test('an injected navigate function is used instead of wx.navigateTo', async () => {
  calls.navigateTo.length = 0;
  const { comp } = await mount([{ id: 5, title: 't', text: 'x', page: 'pages/coupons/index', coupon_id: null }]);
  const urls = [];
  comp.instance.navigate = (opts) => urls.push(opts.url);
  comp.querySelector('.hl-card').dispatchEvent('tap');
  await simulate.sleep(0);
  assert.deepStrictEqual(urls, ['/pages/coupons/index?touch_id=5']);
  assert.deepStrictEqual(calls.navigateTo, []);
});

test('a card without a page closes on tap and navigates nowhere', async () => {
  calls.navigateTo.length = 0;
  const { comp, hl } = await mount([
    { id: 8, title: null, text: 'no page', page: null, coupon_id: null },
  ]);
  assert.strictEqual(hl.seen.coupons, 0); // no card has a coupon: the list is not fetched
  comp.querySelector('.hl-card').dispatchEvent('tap');
  await simulate.sleep(0);
  assert.strictEqual(comp.querySelectorAll('.hl-card').length, 0);
  assert.deepStrictEqual(calls.navigateTo, []);
});

test('× closes its card only and opens nothing', async () => {
  calls.navigateTo.length = 0;
  const { comp } = await mount([
    { id: 10, title: 'first', text: 'a', page: 'pages/coupons/index', coupon_id: null },
    { id: 11, title: 'second', text: 'b', page: 'pages/index/index', coupon_id: null },
  ]);
  comp.querySelector('.hl-card__close').dispatchEvent('tap');
  await simulate.sleep(0);
  const left = comp.querySelectorAll('.hl-card');
  assert.strictEqual(left.length, 1);
  assert.match(text(left[0]), /second/);
  // The close is a catchtap: the tap must not bubble to the card and open a page.
  assert.deepStrictEqual(calls.navigateTo, []);
});

test('nothing is shown when there are no cards or the fetch fails', async () => {
  const { comp } = await mount([]);
  assert.strictEqual(comp.querySelectorAll('.hl-card').length, 0);

  app = {
    hl: {
      reengagement: () => Promise.reject(new Error('offline')),
      coupons: { list: () => Promise.resolve([]) },
    },
  };
  const broken = simulate.render(cardId);
  broken.attach(document.createElement('parent-wrapper'));
  for (let i = 0; i < 5; i++) await simulate.sleep(0);
  assert.strictEqual(broken.querySelectorAll('.hl-card').length, 0);
});
