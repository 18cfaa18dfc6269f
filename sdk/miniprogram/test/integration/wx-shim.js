'use strict';
// A `wx` for Node, for the integration test (tests/test_sdk_miniprogram.py): wx.request does
// real HTTP with Node's http module, storage is a JSON file written synchronously on every
// change (so the next Node process on the same file is the app restarting from its storage),
// wx.login gives a stable code per device (dev-mode login maps it to the same user each time),
// and the app's show/hide can be fired by the script. Test code, run by Node 20: not ES2015-bound.

const fs = require('fs');
const http = require('http');

// What WeChat stores is a copy: a value read back is never the object that was written.
function copy(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

// Every object shaped like an event ({id, type, ts}) anywhere in a value, including inside
// strings holding JSON (an SDK may store its queue as a string to measure its bytes).
function eventsIn(value, out) {
  out = out || [];
  if (typeof value === 'string') {
    const s = value.trim();
    if (s[0] === '[' || s[0] === '{') {
      try {
        eventsIn(JSON.parse(s), out);
      } catch (e) {
        // not JSON: nothing to find
      }
    }
  } else if (Array.isArray(value)) {
    for (const item of value) eventsIn(item, out);
  } else if (value && typeof value === 'object') {
    if (typeof value.id === 'string' && typeof value.type === 'string' && typeof value.ts === 'number') {
      out.push(value);
    }
    for (const key of Object.keys(value)) eventsIn(value[key], out);
  }
  return out;
}

function createWx(options) {
  const storageFile = options.storageFile;
  const device = options.device;
  const launch = options.launch || { path: 'pages/index/index', scene: 1001, query: {}, referrerInfo: {} };
  const subscribeAnswer = options.subscribeAnswer || 'accept';
  const onEvent = options.onEvent || function () {};
  let store = {};
  if (fs.existsSync(storageFile)) store = JSON.parse(fs.readFileSync(storageFile, 'utf8'));
  const showHandlers = [];
  const hideHandlers = [];
  const requests = []; // {method, url, status | null, error | null}
  let open = 0;

  function persist() {
    const tmp = storageFile + '.tmp';
    fs.writeFileSync(tmp, JSON.stringify(store));
    fs.renameSync(tmp, storageFile); // a kill mid-write leaves the old file, as on a phone
  }

  function settle(opts, ok, result, name) {
    // wx APIs answer asynchronously: never inside the call that asked
    setTimeout(() => {
      const fn = ok ? opts.success : opts.fail;
      if (fn) fn(result);
      if (opts.complete) opts.complete(result);
    }, 0);
    if (!opts.success && !opts.fail && !opts.complete) {
      return ok ? Promise.resolve(result) : Promise.reject(result);
    }
    return undefined;
  }

  const wx = {
    getStorageSync(key) {
      return key in store ? copy(store[key]) : ''; // WeChat answers '' for a missing key
    },
    setStorageSync(key, value) {
      store[key] = copy(value);
      persist();
      for (const e of eventsIn(value)) onEvent(e, 'storage');
    },
    removeStorageSync(key) {
      delete store[key];
      persist();
    },
    login(opts) {
      opts = opts || {};
      return settle(opts, true, { code: 'sdkit-' + device, errMsg: 'login:ok' });
    },
    getLaunchOptionsSync() {
      return copy(launch);
    },
    onAppShow(fn) {
      showHandlers.push(fn);
    },
    onAppHide(fn) {
      hideHandlers.push(fn);
    },
    offAppShow(fn) {
      const i = showHandlers.indexOf(fn);
      if (i >= 0) showHandlers.splice(i, 1);
    },
    offAppHide(fn) {
      const i = hideHandlers.indexOf(fn);
      if (i >= 0) hideHandlers.splice(i, 1);
    },
    requestSubscribeMessage(opts) {
      const result = { errMsg: 'requestSubscribeMessage:ok' };
      for (const id of opts.tmplIds || []) result[id] = subscribeAnswer;
      return settle(opts, true, result);
    },
    request(opts) {
      const method = (opts.method || 'GET').toUpperCase();
      const url = new URL(opts.url);
      const headers = Object.assign({}, opts.header || {});
      let body = null;
      if (opts.data !== undefined && opts.data !== null) {
        if (method === 'GET') {
          for (const k of Object.keys(opts.data)) url.searchParams.set(k, String(opts.data[k]));
        } else {
          body = typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data);
          const typed = Object.keys(headers).some((k) => k.toLowerCase() === 'content-type');
          if (!typed) headers['Content-Type'] = 'application/json';
        }
      }
      if (body !== null) {
        headers['Content-Length'] = Buffer.byteLength(body);
        if (url.pathname.endsWith('/events')) {
          for (const e of eventsIn(body)) onEvent(e, 'request');
        }
      }
      const record = { method, path: url.pathname, status: null, error: null };
      requests.push(record);
      open += 1;
      let done = false;
      let timer = null;
      const finish = (ok, result) => {
        if (done) return;
        done = true;
        open -= 1;
        clearTimeout(timer);
        const fn = ok ? opts.success : opts.fail;
        if (fn) fn(result);
        if (opts.complete) opts.complete(result);
      };
      const req = http.request({
        hostname: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method,
        headers,
        agent: false,
      });
      timer = setTimeout(() => {
        record.error = 'timeout';
        req.destroy();
        finish(false, { errMsg: 'request:fail timeout' });
      }, opts.timeout || 60000);
      req.on('response', (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', (e) => {
          record.error = e.message;
          finish(false, { errMsg: 'request:fail ' + e.message });
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let data = text;
          if ((opts.dataType || 'json') === 'json') {
            try {
              data = JSON.parse(text);
            } catch (e) {
              data = text; // WeChat hands back the raw text when it is not JSON
            }
          }
          const header = {}; // the server's own spelling, as WeChat gives it
          for (let i = 0; i < res.rawHeaders.length; i += 2) header[res.rawHeaders[i]] = res.rawHeaders[i + 1];
          record.status = res.statusCode;
          finish(true, { statusCode: res.statusCode, data, header, errMsg: 'request:ok' });
        });
      });
      req.on('error', (e) => {
        record.error = e.message;
        finish(false, { errMsg: 'request:fail ' + e.message });
      });
      req.end(body === null ? undefined : body);
      return {
        abort() {
          record.error = 'abort';
          req.destroy();
          finish(false, { errMsg: 'request:fail abort' });
        },
        onHeadersReceived() {},
        offHeadersReceived() {},
      };
    },
  };

  return {
    wx,
    requests,
    openRequests: () => open,
    storage: () => copy(store),
    show(opts) {
      const o = opts || { path: launch.path, scene: 1001, query: {}, referrerInfo: {} };
      for (const fn of showHandlers.slice()) fn(copy(o));
    },
    hide() {
      for (const fn of hideHandlers.slice()) fn();
    },
  };
}

module.exports = { createWx, eventsIn };
