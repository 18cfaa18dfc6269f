'use strict';
// One life of a phone for the integration test (tests/test_sdk_miniprogram.py drives it):
//
//   node run.js --phase 1 --base <proxy> --appid <appid> --storage <file> --ledger <file>
//               --template <coupon template id> --subscribe <subscribe template id> [--events N]
//
// Phase 1 (under the proxy's faults): launches from a message, shows pages, tracks N events of
// several types, claims a coupon and asks for a subscription (neither awaited: the proxy drops
// their answers while faults are on), flushes, hides the app and exits at once with events and
// calls still queued: the kill.
// Phase 2 (the network has recovered): a new process on the same storage file, the restart.
// It tracks a few more events, flushes until the queue and the outbox are empty, redeems the
// claimed coupon (the test drops that answer once), hides the app, drains again and prints one
// JSON line with every event id tracked in both phases.
//
// The ledger file (beside the storage, not the SDK's) keeps what phase 1 tracked, so phase 2
// can print both. Ids returned by track() are "explicit"; auto-tracked events never pass
// through track()'s return, so they are learnt from what the SDK stores or sends: any event
// seen there whose props carry no `seq` (explicit events all do) is an auto-tracked one.

const fs = require('fs');
const { createWx } = require('./wx-shim');

const TOUCH_AT_LAUNCH = '9101'; // touch ids our messages put in the page query
const TOUCH_IN_PAGE = '9102';
const TYPES = ['search', 'add_to_cart', 'like', 'coupon_view', 'page_view', 'custom:tap', 'comment'];

function parseArgs(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The outbox is empty when stored as nothing, an empty list, or an object whose lists are empty.
function emptyish(value) {
  if (value === '' || value === undefined || value === null) return true;
  if (typeof value === 'string') {
    try {
      return emptyish(JSON.parse(value));
    } catch (e) {
      return false;
    }
  }
  if (Array.isArray(value)) return value.length === 0;
  if (typeof value === 'object') {
    return Object.keys(value).every((k) => !Array.isArray(value[k]) || value[k].length === 0);
  }
  return false;
}

async function main() {
  const args = parseArgs(process.argv);
  const phase = Number(args.phase);
  const prefix = 'huiliu:';
  const ledger = fs.existsSync(args.ledger)
    ? JSON.parse(fs.readFileSync(args.ledger, 'utf8'))
    : { explicit: [], observed: {} };
  const saveLedger = () => fs.writeFileSync(args.ledger, JSON.stringify(ledger));
  const seen = (e) => {
    if (!(e.id in ledger.observed)) {
      const seq = e.props && e.props.seq !== undefined ? e.props.seq : null;
      ledger.observed[e.id] = { type: e.type, seq, phase };
    }
  };
  const launch =
    phase === 1
      ? { path: 'pages/index/index', scene: 1014, query: { touch_id: TOUCH_AT_LAUNCH }, referrerInfo: {} }
      : { path: 'pages/index/index', scene: 1001, query: {}, referrerInfo: {} };
  const shim = createWx({ storageFile: args.storage, device: args.device || 'phone-1', launch, onEvent: seen });

  // The platform's Page: init replaces it with its wrapper, which hands the options on to this.
  const registered = [];
  global.Page = (opts) => {
    registered.push(opts);
    return opts;
  };

  const huiliu = require('../..');
  const hl = huiliu.init({
    baseUrl: args.base,
    appid: args.appid,
    wx: shim.wx,
    batchSize: 10, // small batches: more requests, so more of them meet a fault
    maxBatch: 10,
    flushInterval: 300,
    retryBase: 50,
    retryMax: 1500,
    timeout: 3000,
    persistDelay: 50,
  });
  if (huiliu.init({ baseUrl: args.base, appid: args.appid, wx: shim.wx }) !== hl) {
    throw new Error('init twice gave two clients');
  }

  // One page, opened the way WeChat would: the instance carries the options' methods and route.
  Page({ data: {}, onLoad() {}, onShow() {} });
  if (registered.length !== 1) throw new Error('the SDK did not hand Page on to the platform');
  const openPage = (route, query) => {
    const page = Object.assign({ route, options: query }, registered[0]);
    page.onLoad(query);
    page.onShow();
  };

  const track = (type, props) => {
    const id = hl.track(type, props);
    if (typeof id !== 'string') throw new Error(`track(${type}) returned ${id}`);
    ledger.explicit.push(id);
    seen({ id, type, props });
    return id;
  };
  const explicitProps = (i) => (TYPES[i % TYPES.length] === 'page_view' ? { page: 'pages/menu/index', query: {}, seq: i, phase } : { seq: i, phase });
  const n = Number(args.events || (phase === 1 ? 300 : 20));

  if (phase === 1) {
    openPage('pages/menu/index', { touch_id: TOUCH_IN_PAGE }); // page_view + message_open
    openPage('pages/menu/index', { touch_id: TOUCH_IN_PAGE }); // page_view only: touch seen
    for (let i = 0; i < n; i += 1) {
      track(TYPES[i % TYPES.length], explicitProps(i));
      if (i === 100) {
        // Not awaited: every answer is dropped while faults are on, so both are still in the
        // outbox when this process dies; the restart must finish them, each exactly once.
        hl.coupons.claim(Number(args.template)).catch(() => {});
        hl.requestSubscribe([args.subscribe]).catch(() => {});
      }
      if (i === 150) {
        shim.hide(); // session_end, persisted and flushed
        await sleep(20);
        shim.show({ path: 'pages/index/index', scene: 1001, query: {}, referrerInfo: {} }); // app_open
      }
      if (i % 10 === 9) await sleep(5);
      if (i % 60 === 59 && i < n - 60) await hl.flush();
    }
    shim.hide(); // written to storage at once; its flush starts
    await new Promise((resolve) => setImmediate(resolve));
    const stats = hl.stats();
    saveLedger();
    process.stdout.write(JSON.stringify({ phase, stats, open_requests: shim.openRequests(), requests: shim.requests.length }) + '\n');
    process.exit(0); // the kill: no flush awaited, no timer left to run
  }

  // Phase 2: the restart, on a network that works.
  const drain = async (what) => {
    const deadline = Date.now() + 90000;
    for (;;) {
      await hl.flush();
      const st = hl.stats();
      const outbox = shim.storage()[prefix + 'outbox'];
      if (st.queued === 0 && st.inFlight === 0 && emptyish(outbox)) return st;
      if (Date.now() > deadline) {
        throw new Error(`${what}: not drained in 90 s: ${JSON.stringify({ st, outbox })}`);
      }
      await sleep(100);
    }
  };
  openPage('pages/menu/index', { touch_id: TOUCH_IN_PAGE }); // the touch was seen before the kill
  for (let i = 0; i < n; i += 1) track(TYPES[i % TYPES.length], explicitProps(i));
  await drain('phase 2');
  const coupons = await hl.coupons.list();
  const mine = coupons.filter((c) => c.template_id === Number(args.template));
  let redeemed = null;
  if (mine.length > 0) {
    redeemed = await hl.coupons.redeem(mine[0].id, { orderId: 'sdkit-order-1', amountFen: 2000 });
  }
  shim.hide(); // session_end of the second life
  const stats = await drain('phase 2 after hide');
  saveLedger();
  const explicit = new Set(ledger.explicit);
  const auto = {};
  const strays = {};
  for (const id of Object.keys(ledger.observed)) {
    const o = ledger.observed[id];
    if (explicit.has(id)) continue;
    if (o.seq === null) auto[id] = o.type;
    else strays[id] = o; // an explicit event under an id track() never returned
  }
  process.stdout.write(
    JSON.stringify({ phase, explicit: ledger.explicit, auto, strays, stats, coupons, redeemed, requests: shim.requests.length }) + '\n'
  );
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write((err && err.stack) || String(err));
  process.stderr.write('\n');
  process.exit(1);
});
