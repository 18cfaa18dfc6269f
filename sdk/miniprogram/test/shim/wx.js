'use strict';
// An in-memory `wx` for tests.
//
//   const env = createWx({ storage, openid, launch, api });
//   env.wx            the object to pass as init({ wx: env.wx, ... })
//   env.requests      every wx.request: {method, path, url, data, header, timeout}
//   env.script(match, answers)   the next requests whose "METHOD /path" contains `match` get
//                     these answers in order: {status, data, header} | {fail: errMsg} |
//                     'pass' (the fake API answers) | 'lose' (the API handles it, the answer is
//                     lost: wx gets fail) | 'hold' (waits until env.release()).
//   env.open / env.maxOpen   requests without an answer now / at most so far
//   env.show(opts) / env.hide()   fire wx.onAppShow / wx.onAppHide listeners
//   env.storage       a Map (key -> JSON text) that a second createWx({storage}) can share:
//                     that is an app restart. Limits as WeChat: 1 MB per key, 10 MB in all.
//
// Answers arrive asynchronously (real setImmediate), so they work under the fake clock too.
const { FakeApi } = require('./api');

const MB = 1024 * 1024;
const KEY_LIMIT = MB;
const TOTAL_LIMIT = 10 * MB;

function copy(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

function createWx(opts) {
  const o = opts || {};
  const storage = o.storage || new Map();
  const openid = o.openid || 'o_tester';
  const api = o.api || new FakeApi(o.apiOptions);
  const shows = [];
  const hides = [];
  const scripts = [];
  const held = [];
  let logins = 0;

  const env = {
    storage: storage,
    api: api,
    openid: openid,
    launch: o.launch || { path: 'pages/index/index', scene: 1001, query: {} },
    requests: [],
    open: 0,
    maxOpen: 0,
    loginFail: null, // set to an errMsg to make wx.login fail
    subscribeAnswer: (tmplIds) => {
      const r = { errMsg: 'requestSubscribeMessage:ok' };
      tmplIds.forEach((id) => { r[id] = 'accept'; });
      return r;
    },
    storageBytes() {
      let n = 0;
      for (const [k, v] of storage) n += Buffer.byteLength(k) + Buffer.byteLength(v);
      return n;
    },
    // storage value as the SDK wrote it (parsed), without the prefix
    stored(name, prefix) {
      const v = storage.get((prefix === undefined ? 'huiliu:' : prefix) + name);
      if (v === undefined) return undefined;
      const data = JSON.parse(v);
      return typeof data === 'string' ? JSON.parse(data) : data;
    },
    script(match, answers) {
      answers.forEach((a) => scripts.push({ match: match, answer: a }));
    },
    // requests whose "METHOD /path" contains match
    sent(match) {
      return env.requests.filter((r) => (r.method + ' ' + r.path).indexOf(match) >= 0);
    },
    held: held,
    // answer the oldest held request (or the given one) with `answer` ('pass' by default)
    release(answer, index) {
      const h = held.splice(index || 0, 1)[0];
      if (!h) throw new Error('nothing held');
      h(answer || 'pass');
    },
    show(opts2) {
      shows.forEach((f) => f(Object.assign({ path: 'pages/index/index', scene: 1001, query: {} }, opts2 || {})));
    },
    hide() {
      hides.forEach((f) => f());
    }
  };

  function answerFor(req) {
    const key = req.method + ' ' + req.path;
    for (let i = 0; i < scripts.length; i++) {
      if (key.indexOf(scripts[i].match) >= 0) return scripts.splice(i, 1)[0].answer;
    }
    return 'pass';
  }

  function deliver(req, answer, success, fail) {
    if (answer === 'hold') {
      held.push((a) => deliver(req, a, success, fail));
      return;
    }
    setImmediate(() => {
      env.open--;
      if (answer === 'pass' || answer === 'lose') {
        const res = api.handle({ method: req.method, path: req.path, data: copy(req.data), header: req.header });
        if (answer === 'lose') return fail({ errMsg: 'request:fail timeout' });
        return success({ statusCode: res.status, data: copy(res.data), header: res.header || {} });
      }
      if (answer.fail) return fail({ errMsg: answer.fail });
      success({ statusCode: answer.status, data: copy(answer.data === undefined ? {} : answer.data), header: answer.header || {} });
    });
  }

  const wx = {
    request(p) {
      const url = String(p.url);
      const m = /^https?:\/\/[^/]+(\/[^?]*)/.exec(url);
      const req = {
        method: (p.method || 'GET').toUpperCase(),
        url: url,
        path: m ? m[1] : url,
        data: copy(p.data),
        header: Object.assign({}, p.header),
        timeout: p.timeout,
        at: Date.now()
      };
      env.requests.push(req);
      env.open++;
      env.maxOpen = Math.max(env.maxOpen, env.open);
      deliver(req, answerFor(req), (r) => p.success && p.success(r), (e) => p.fail && p.fail(e));
      return { abort() {} };
    },
    login(p) {
      setImmediate(() => {
        if (env.loginFail) return p.fail && p.fail({ errMsg: env.loginFail });
        logins++;
        p.success && p.success({ code: 'code-' + openid + '-' + logins, errMsg: 'login:ok' });
      });
    },
    getStorageSync(key) {
      if (typeof key !== 'string' || !key) throw new Error('getStorageSync:fail parameter error');
      return storage.has(key) ? JSON.parse(storage.get(key)) : '';
    },
    setStorageSync(key, data) {
      if (typeof key !== 'string' || !key) throw new Error('setStorageSync:fail parameter error');
      const text = JSON.stringify(data === undefined ? null : data);
      const size = Buffer.byteLength(key) + Buffer.byteLength(text);
      if (size > KEY_LIMIT) throw new Error('setStorageSync:fail exceed storage item max length');
      const old = storage.has(key) ? Buffer.byteLength(key) + Buffer.byteLength(storage.get(key)) : 0;
      if (env.storageBytes() - old + size > TOTAL_LIMIT) throw new Error('setStorageSync:fail exceed storage max size 10MB');
      storage.set(key, text);
    },
    removeStorageSync(key) {
      storage.delete(key);
    },
    getStorageInfoSync() {
      return { keys: Array.from(storage.keys()), currentSize: Math.ceil(env.storageBytes() / 1024), limitSize: TOTAL_LIMIT / 1024 };
    },
    onAppShow(f) {
      shows.push(f);
    },
    onAppHide(f) {
      hides.push(f);
    },
    getLaunchOptionsSync() {
      return copy(env.launch);
    },
    requestSubscribeMessage(p) {
      setImmediate(() => {
        const r = env.subscribeAnswer(p.tmplIds);
        if (r && r.fail) return p.fail && p.fail(r.fail);
        p.success && p.success(r);
      });
    }
  };
  env.wx = wx;
  return env;
}

// A fake global Page that returns its definition, so tests can call the lifecycle by hand.
function installPage() {
  const pages = [];
  global.Page = function (def) {
    pages.push(def);
    return def;
  };
  return {
    pages: pages,
    uninstall() {
      delete global.Page;
    }
  };
}

module.exports = { createWx, installPage, FakeApi };
