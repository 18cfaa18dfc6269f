'use strict';
const storage = require('./storage');
const Queue = require('./queue');
const Outbox = require('./outbox');
const Auth = require('./auth');
const ids = require('./ids');
const t = require('./transport');
const autotrack = require('./autotrack');

// The server's event vocabulary (backend/services/event_validation.py); anything else must be
// 'custom:<name>'.
const TYPES = ['app_open', 'page_view', 'session_end', 'search', 'add_to_cart', 'cart_abandoned',
  'checkout_start', 'order_paid', 'payment_failed', 'order_refunded', 'share', 'invite', 'review',
  'like', 'comment', 'message_open', 'coupon_view'];
// A phone can claim any amount: orders belong to the merchant's server unless allowed.
const ORDER_TYPES = ['order_paid', 'order_refunded'];
const MAX_PROPS_BYTES = 2048; // the server refuses larger props
const MAX_KEY_BYTES = 1000 * 1000; // under WeChat's 1 MB per storage key, however it counts
const SEEN_TOUCHES = 50;
const CALL_ATTEMPTS = 3; // for calls a user waits on
const KEYS = ['token', 'queue', 'outbox', 'device', 'optout', 'seen_touches', 'stats'];
const SUBSCRIBE_ANSWERS = ['accept', 'reject', 'ban', 'filter'];
const AUTO = ['appOpen', 'sessionEnd', 'pageView', 'share', 'messageOpen'];

function noop() {}

function whole(v, dflt, lo, hi) {
  const n = typeof v === 'number' && v === v ? Math.floor(v) : dflt;
  return Math.min(hi, Math.max(lo, n));
}

function fail(code, message) {
  const e = new Error('huiliu: ' + message);
  e.code = code;
  e.status = 0;
  e.retryable = false;
  return e;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function options(o) {
  const auto = {};
  const a = o.autoTrack;
  AUTO.forEach((k) => {
    auto[k] = a === false ? false : !(a && typeof a === 'object' && a[k] === false);
  });
  return {
    baseUrl: String(o.baseUrl).replace(/\/+$/, ''),
    appid: String(o.appid),
    batchSize: whole(o.batchSize, 20, 1, 500),
    flushInterval: whole(o.flushInterval, 5000, 0, 86400000),
    maxBatch: whole(o.maxBatch, 100, 1, 500),
    maxQueue: whole(o.maxQueue, 1000, 1, 100000),
    maxQueueBytes: whole(o.maxQueueBytes, 512 * 1024, 4096, MAX_KEY_BYTES),
    maxInFlight: whole(o.maxInFlight, 2, 1, 10),
    timeout: whole(o.timeout, 5000, 100, 600000),
    retryBase: whole(o.retryBase, 1000, 1, 3600000),
    retryMax: whole(o.retryMax, 300000, 1, 86400000),
    persistDelay: whole(o.persistDelay, 300, 0, 60000),
    autoTrack: auto,
    allowOrderEvents: o.allowOrderEvents === true,
    debug: o.debug === true,
    storagePrefix: typeof o.storagePrefix === 'string' ? o.storagePrefix : 'huiliu:'
  };
}

class Client {
  constructor(opts) {
    const o = opts || {};
    if (!o.baseUrl || !o.appid) throw fail('invalid_options', 'init needs baseUrl and appid');
    this.wx = o.wx || (typeof wx !== 'undefined' ? wx : null);
    if (!this.wx) throw fail('no_wx', 'no wx object (pass options.wx outside WeChat)');
    this.o = options(o);
    this._epoch = 0; // bumped by opt-out and erase: answers to older requests are ignored
    this._gen = 0; // bumped by a failed send: batches queued before it are not sent
    this._failures = 0;
    this._retryAt = 0;
    this._timer = null;
    this._timerAt = 0;
    this._persistTimer = null;
    this._batches = [];
    this._running = {};
    this._optSync = null;
    this._authBlocked = false;
    this._erasing = false;
    this._closed = false;

    this.store = new storage.Storage(this.wx, this.o.storagePrefix, (m, e) => this._warn(m, e));
    this._load();
    this.transport = new t.Transport(this.wx, this.o.baseUrl, this.o.timeout, this.o.maxInFlight);
    this.auth = new Auth(this);
    this.coupons = {
      list: () => this._marketing() || this._call('GET', '/mp/v1/coupons').then((d) => (d && d.coupons) || []),
      claim: (templateId) => this._claim(templateId),
      redeem: (couponId, order) => this._redeem(couponId, order)
    };

    autotrack.install(this);
    this._reschedule();
    this._syncOptOut().catch(noop);
    this._replayOutbox();
  }

  _load() {
    const s = this.store;
    const opt = s.get('optout');
    this._optout = opt && typeof opt.v === 'boolean' ? opt : { v: false, synced: true };
    const st = s.get('stats') || {};
    this._stats = {};
    ['sent', 'duplicates', 'rejected', 'dropped', 'retries'].forEach((k) => {
      this._stats[k] = typeof st[k] === 'number' ? st[k] : 0;
    });
    const seen = s.get('seen_touches');
    this._seen = Array.isArray(seen) ? seen : [];
    this.ids = new ids.Ids(s);
    this.queue = new Queue(s, this.o.maxQueue, this.o.maxQueueBytes);
    this._stats.dropped += this.queue.load();
    if (this._optout.v) this.queue.clear();
    this.outbox = new Outbox(s);
  }

  _log(msg, extra) {
    if (this.o.debug) console.log('[huiliu] ' + msg, extra === undefined ? '' : extra);
  }
  _warn(msg, extra) {
    console.warn('[huiliu] ' + msg, extra === undefined ? '' : extra);
  }

  // ---- events -------------------------------------------------------------------------

  track(type, props) {
    return this._enqueue(type, props);
  }

  _auto(type, props) {
    return this._enqueue(type, props);
  }

  _stopped() {
    return this._closed || this._optout.v || this._erasing;
  }

  _enqueue(type, props) {
    if (this._stopped()) return null;
    if (typeof type !== 'string' || type.length > 64 ||
        (TYPES.indexOf(type) < 0 && !(type.indexOf('custom:') === 0 && type.length > 7))) {
      this._warn('unknown event type refused (use the vocabulary or custom:<name>)', type);
      return null;
    }
    if (ORDER_TYPES.indexOf(type) >= 0 && !this.o.allowOrderEvents) {
      this._warn(type + ' refused: orders must come from your server (or set allowOrderEvents)');
      return null;
    }
    if (props === undefined || props === null) props = {};
    let json;
    try {
      json = typeof props === 'object' && !Array.isArray(props) ? JSON.stringify(props) : null;
    } catch (e) {
      json = null;
    }
    if (!json || storage.utf8Length(json) > MAX_PROPS_BYTES) {
      this._warn('event refused: props must be a JSON object of at most 2 KB', type);
      return null;
    }
    const copy = JSON.parse(json); // later changes by the caller do not reach the queue
    if (type === 'message_open' && copy.touch_id !== undefined && !this._firstTouch(copy.touch_id)) return null;
    const event = { id: this.ids.next(), type: type, ts: Date.now(), props: copy };
    const dropped = this.queue.push(event);
    if (dropped) {
      this._stats.dropped += dropped;
      this._warn('queue full: dropped oldest events', dropped);
    }
    this._log('track ' + type, event.id);
    this._dirty();
    this._reschedule();
    return event.id;
  }

  // message_open is sent once per touch id (the last SEEN_TOUCHES are remembered).
  _firstTouch(id) {
    const k = String(id);
    if (this._seen.indexOf(k) >= 0) return false;
    this._seen.push(k);
    if (this._seen.length > SEEN_TOUCHES) this._seen = this._seen.slice(-SEEN_TOUCHES);
    this.store.set('seen_touches', this._seen);
    return true;
  }

  _opened(query, page) {
    const id = query && query.touch_id;
    if (id === undefined || id === null || id === '') return;
    const n = /^\d{1,15}$/.test(String(id)) ? Number(id) : String(id);
    this._enqueue('message_open', { touch_id: n, page: page || '' });
  }

  _dirty() {
    if (this._persistTimer || this._closed) return;
    this._persistTimer = setTimeout(() => this._persist(), this.o.persistDelay);
  }

  _persist() {
    clearTimeout(this._persistTimer);
    this._persistTimer = null;
    if (this._closed) return;
    this.ids.save();
    this.queue.save();
    this.store.set('stats', {
      sent: this._stats.sent,
      duplicates: this._stats.duplicates,
      rejected: this._stats.rejected,
      dropped: this._stats.dropped,
      retries: this._stats.retries
    });
  }

  // One timer decides the next automatic send: now when batchSize events wait, else after
  // flushInterval, never before the backoff allows.
  _arm(at) {
    if (this._timer && this._timerAt <= at) return;
    clearTimeout(this._timer);
    this._timerAt = at;
    this._timer = setTimeout(() => {
      this._timer = null;
      this._pump();
    }, Math.max(0, at - Date.now()));
  }

  _disarm() {
    clearTimeout(this._timer);
    this._timer = null;
  }

  _reschedule() {
    if (this._stopped() || this._authBlocked) return this._disarm();
    const p = this.queue.pending();
    if (!p) return;
    const now = Date.now();
    if (now < this._retryAt) return this._arm(this._retryAt);
    this._arm(p >= this.o.batchSize ? now : now + this.o.flushInterval);
  }

  _pump() {
    if (this._stopped() || this._authBlocked || !this.queue.pending()) return;
    if (Date.now() < this._retryAt) return this._arm(this._retryAt);
    const gen = this._gen;
    this.auth.ensure().then(() => {
      if (this._stopped() || this._authBlocked) return;
      let free = this.o.maxInFlight - this._batches.length;
      while (free-- > 0) {
        const items = this.queue.take(this.o.maxBatch);
        if (!items.length) break;
        this._sendBatch(items, false);
      }
    }, (e) => this._failed(e, gen));
  }

  // A send failed in a way worth retrying: back off (once per generation, so two batches failing
  // together count as one failure).
  _failed(err, gen) {
    if (gen !== this._gen) return;
    this._gen++;
    this._failures++;
    this._stats.retries++;
    const d = t.retryDelay(this._failures - 1, this.o.retryBase, this.o.retryMax, err);
    this._retryAt = Date.now() + d;
    this._log('send failed, retry in ' + d + ' ms', err && err.message);
    this._arm(this._retryAt);
  }

  _sendBatch(items, renewed) {
    const epoch = this._epoch;
    const gen = this._gen;
    const ids = items.map((e) => e.id);
    let token = null;
    const p = this.transport.request({
      method: 'POST',
      path: '/mp/v1/events',
      skip: () => this._epoch !== epoch || this._gen !== gen || this._stopped(),
      header: () => {
        token = this.auth.token();
        return { Authorization: 'Bearer ' + token };
      },
      data: () => ({ events: items, sent_at: Date.now() })
    }).then((res) => this._batchDone(items, ids, res, token, epoch, gen, renewed));
    this._batches.push(p);
    const done = () => {
      const i = this._batches.indexOf(p);
      if (i >= 0) this._batches.splice(i, 1);
    };
    p.then(done, done);
    return p;
  }

  _batchDone(items, ids, res, token, epoch, gen, renewed) {
    const none = { sent: [], rejected: [] };
    if (epoch !== this._epoch) return none; // opted out or erased meanwhile
    if (res.skipped) {
      this.queue.release(ids);
      return none;
    }
    const kind = t.classify(res.status);
    const d = res.data;
    if (kind === 'ok' && d && typeof d.accepted === 'number') {
      const rejected = [];
      (Array.isArray(d.rejected) ? d.rejected : []).forEach((r) => {
        const e = items[r && r.index];
        if (e && rejected.indexOf(e.id) < 0) {
          rejected.push(e.id);
          this._warn('event rejected: ' + e.type + ' ' + e.id + ': ' + r.error);
        }
      });
      this.queue.remove(ids);
      this._stats.sent += d.accepted;
      this._stats.duplicates += d.duplicates || 0;
      this._stats.rejected += rejected.length;
      this._failures = 0;
      this._retryAt = 0;
      this._dirty();
      this._reschedule();
      return { sent: ids.filter((id) => rejected.indexOf(id) < 0), rejected: rejected };
    }
    if (kind === 'auth' && !renewed) {
      // The items stay reserved while the token is renewed, then go once more.
      return this.auth.renew(token).then(() => this._sendBatch(items, true), (e) => {
        this.queue.release(ids);
        this._failed(e, gen);
        return none;
      });
    }
    this.queue.release(ids);
    if (kind === 'auth') {
      // The renewed token was refused too: wait for the next show or login().
      this._authBlocked = true;
      this._disarm();
      this._warn('token refused twice; events wait for the next show or login()');
      return none;
    }
    if (kind === 'fatal') {
      this.queue.remove(ids);
      this._stats.rejected += ids.length;
      this._warn('batch refused, ' + ids.length + ' events dropped', t.toError(res).message);
      this._dirty();
      this._reschedule();
      return { sent: [], rejected: ids };
    }
    this._failed(kind === 'ok' ? t.toError({ status: 0, errMsg: 'unexpected answer' }) : t.toError(res), gen);
    return none;
  }

  flush() {
    const snap = this.queue.ids();
    const summary = (results) => {
      const sent = {};
      const rejected = {};
      results.forEach((r) => {
        (r && r.sent ? r.sent : []).forEach((id) => { sent[id] = true; });
        (r && r.rejected ? r.rejected : []).forEach((id) => { rejected[id] = true; });
      });
      const out = { sent: 0, rejected: 0, pending: 0 };
      snap.forEach((id) => {
        if (sent[id]) out.sent++;
        else if (rejected[id]) out.rejected++;
        else if (this.queue.has(id)) out.pending++;
      });
      return out;
    };
    this._persist();
    if (this._closed) return Promise.resolve(summary([]));
    this._syncOptOut().catch(noop);
    this._replayOutbox();
    if (this._stopped() || this._authBlocked || !snap.length) return Promise.resolve(summary([]));
    const gen = this._gen;
    const earlier = this._batches.slice();
    return this.auth.ensure().then(() => {
      const all = earlier.slice();
      if (this._stopped() || this._authBlocked) return Promise.all(all);
      let items;
      while ((items = this.queue.take(this.o.maxBatch)).length) all.push(this._sendBatch(items, false));
      return Promise.all(all);
    }, (e) => {
      this._failed(e, gen);
      return Promise.all(earlier);
    }).then(summary, () => summary([]));
  }

  // ---- calls --------------------------------------------------------------------------

  // One API call with the token, one renewal on a 401, and up to `attempts` tries on answers
  // worth retrying. Resolves with the answer's body; rejects with an Error carrying status, code
  // and retryable. `gone` (erase only): a 401 invalid_token on a retry means it already worked.
  _call(method, path, data, attempts, gone) {
    const max = attempts || CALL_ATTEMPTS;
    const once = (attempt, renewed) => this.auth.ensure().then((token) => this.transport.request({
      method: method,
      path: path,
      data: data,
      header: { Authorization: 'Bearer ' + token }
    }).then((res) => {
      const kind = t.classify(res.status);
      if (kind === 'ok') return { data: res.data };
      const err = t.toError(res);
      if (kind === 'auth') {
        if (gone && attempt > 0 && err.code === 'invalid_token') return { data: gone() };
        if (!renewed) return this.auth.renew(token).then(() => once(attempt, true), (e) => ({ err: e }));
      }
      return { err: err };
    }), (e) => ({ err: e }));
    const loop = (attempt) => once(attempt, false).then((r) => {
      if (!r.err) return r.data;
      const e = r.err;
      if (e.retryable && e.status !== 401 && attempt + 1 < max) {
        this._stats.retries++;
        return sleep(t.retryDelay(attempt, this.o.retryBase, this.o.retryMax, e)).then(() => loop(attempt + 1));
      }
      throw e;
    });
    return loop(0);
  }

  _marketing() {
    if (this._closed) return Promise.reject(fail('closed', 'client closed'));
    if (this._optout.v) return Promise.reject(fail('opted_out', 'the user opted out'));
    if (this._erasing) return Promise.reject(fail('erasing', 'erasing the user'));
    return null;
  }

  login() {
    const blocked = this._authBlocked;
    this._authBlocked = false;
    const attempt = (n) => (blocked && n === 0 ? this.auth.renew() : this.auth.ensure()).catch((e) => {
      if (e.retryable && n + 1 < CALL_ATTEMPTS) {
        return sleep(t.retryDelay(n, this.o.retryBase, this.o.retryMax, e)).then(() => attempt(n + 1));
      }
      throw e;
    });
    return attempt(0).then((tok) => {
      this._reschedule();
      return tok;
    });
  }

  reengagement() {
    return this._marketing() || this._call('GET', '/mp/v1/reengagement').then((d) => (d && d.cards) || []);
  }

  myData() {
    return this._call('GET', '/mp/v1/me/data');
  }

  requestSubscribe(templateIds) {
    const stop = this._marketing();
    if (stop) return stop;
    const tmplIds = Array.isArray(templateIds) ? templateIds.slice() : [templateIds];
    if (!tmplIds.length || tmplIds.length > 3 || tmplIds.some((x) => typeof x !== 'string' || !x)) {
      return Promise.reject(fail('invalid_request', 'requestSubscribe takes 1 to 3 template ids'));
    }
    // Called at once (no await before it): WeChat only shows the prompt inside the tap handler.
    return new Promise((resolve, reject) => {
      try {
        this.wx.requestSubscribeMessage({
          tmplIds: tmplIds,
          success: resolve,
          fail: (e) => {
            const err = fail('subscribe_failed', (e && e.errMsg) || 'requestSubscribeMessage failed');
            err.errCode = e && e.errCode;
            reject(err);
          }
        });
      } catch (e) {
        reject(fail('subscribe_failed', String(e)));
      }
    }).then((res) => {
      const results = {};
      let n = 0;
      tmplIds.forEach((id) => {
        if (res && SUBSCRIBE_ANSWERS.indexOf(res[id]) >= 0) {
          results[id] = res[id];
          n++;
        }
      });
      if (!n) return { allowances: {}, duplicate: false };
      const id = ids.key('s');
      const entry = this.outbox.add({ id: id, kind: 'subscribe', path: '/mp/v1/subscriptions', body: { id: id, results: results } });
      return this._runEntry(entry);
    });
  }

  _claim(templateId) {
    const stop = this._marketing();
    if (stop) return stop;
    if (typeof templateId !== 'number' || templateId < 1 || Math.floor(templateId) !== templateId) {
      return Promise.reject(fail('invalid_request', 'claim takes a template id (a positive integer)'));
    }
    // A claim for the same template still waiting for its answer is the same claim (a user
    // tapping again after a failure must not get two coupons).
    let entry = this.outbox.find((e) => e.kind === 'claim' && e.body.template_id === templateId);
    if (!entry) {
      const id = ids.key('c');
      entry = this.outbox.add({ id: id, kind: 'claim', path: '/mp/v1/coupons/claim', body: { template_id: templateId, id: id } });
    }
    return this._runEntry(entry);
  }

  _redeem(couponId, order) {
    const stop = this._marketing();
    if (stop) return stop;
    const o = order || {};
    if (!(couponId > 0) || typeof o.orderId !== 'string' || !o.orderId || !(o.amountFen > 0)) {
      return Promise.reject(fail('invalid_request', 'redeem takes (couponId, {orderId, amountFen})'));
    }
    return this._call('POST', '/mp/v1/coupons/' + Math.floor(couponId) + '/redeem',
      { order_id: o.orderId, order_amount_fen: Math.floor(o.amountFen) });
  }

  // Sends one outbox entry (joining a send already running for it). Answered: removed. Refused
  // (4xx): removed and rejected. Not answered: kept for the next show, flush or start, and the
  // promise rejects with err.pending = true.
  _runEntry(entry, attempts) {
    if (this._running[entry.id]) return this._running[entry.id];
    const p = this._call('POST', entry.path, entry.body, attempts).then((data) => {
      this.outbox.remove(entry.id);
      return data;
    }, (e) => {
      if (e.retryable) e.pending = true;
      else this.outbox.remove(entry.id);
      throw e;
    });
    this._running[entry.id] = p;
    const done = () => { delete this._running[entry.id]; };
    p.then(done, done);
    return p;
  }

  _replayOutbox() {
    if (this._stopped()) return;
    this.outbox.entries.slice().forEach((e) => this._runEntry(e, 1).catch(noop));
  }

  // ---- privacy ------------------------------------------------------------------------

  /** Whether the user opted out (kept in storage, so a page can show the right switch). */
  isOptedOut() {
    return this._optout.v === true;
  }

  optOut() {
    this._optout = { v: true, synced: false };
    this.store.set('optout', this._optout);
    this._epoch++;
    this.queue.clear();
    this._disarm();
    this._persist();
    return this._syncOptOut();
  }

  optIn() {
    this._optout = { v: false, synced: false };
    this.store.set('optout', this._optout);
    const p = this._syncOptOut();
    this._reschedule();
    return p;
  }

  // Tells the server the current choice until it has heard it (retried on show and start).
  _syncOptOut() {
    if (this._optout.synced || this._closed) return Promise.resolve(null);
    if (this._optSync) return this._optSync;
    const want = this._optout.v;
    const p = this._call('POST', want ? '/mp/v1/me/opt-out' : '/mp/v1/me/opt-in').then((d) => {
      this._optSync = null;
      if (this._optout.v !== want) return this._syncOptOut();
      this._optout.synced = true;
      this.store.set('optout', this._optout);
      return d;
    }, (e) => {
      this._optSync = null;
      throw e;
    });
    this._optSync = p;
    return p;
  }

  eraseMe() {
    if (this._erasing) return this._erasing;
    this._disarm();
    const p = this._call('DELETE', '/mp/v1/me', undefined, CALL_ATTEMPTS, () => ({ erased: null })).then((d) => {
      this._epoch++;
      this.queue.clear();
      this.outbox.clear();
      this.auth.clear();
      this._seen = [];
      // A user who opted out and then erased their data is not tracked again as a new user.
      const out = this._optout.v;
      this._optout = { v: out, synced: true };
      Object.keys(this._stats).forEach((k) => { this._stats[k] = 0; });
      clearTimeout(this._persistTimer);
      this._persistTimer = null;
      KEYS.forEach((k) => this.store.remove(k));
      if (out) this.store.set('optout', this._optout);
      this.ids = new ids.Ids(this.store);
      this._erasing = false;
      return d;
    }, (e) => {
      this._erasing = false;
      this._reschedule();
      throw e;
    });
    this._erasing = p;
    return p;
  }

  // ---- state --------------------------------------------------------------------------

  stats() {
    return {
      queued: this.queue.length,
      inFlight: this.transport.active,
      sent: this._stats.sent,
      duplicates: this._stats.duplicates,
      rejected: this._stats.rejected,
      dropped: this._stats.dropped,
      retries: this._stats.retries
    };
  }

  _onShow(o) {
    if (this._closed) return;
    this._authBlocked = false;
    if (!this._fg) {
      this._fg = true;
      this._since = Date.now();
      if (this.o.autoTrack.appOpen) this._auto('app_open', { scene: o.scene, path: o.path });
    }
    if (this.o.autoTrack.messageOpen) this._opened(o.query, o.path);
    this._syncOptOut().catch(noop);
    this._replayOutbox();
    this._reschedule();
  }

  _onHide() {
    if (this._closed || !this._fg) return;
    this._fg = false;
    if (this.o.autoTrack.sessionEnd) {
      const s = Math.round((Date.now() - this._since) / 1000);
      this._auto('session_end', { duration_s: Math.min(86400, Math.max(0, s)) });
    }
    // WeChat cuts requests off soon after the app goes to the background: write, then send.
    this._persist();
    this.flush();
  }

  // Stops timers and listeners' effects without writing anything (tests use it to simulate
  // the app being killed).
  _close() {
    this._closed = true;
    this._disarm();
    clearTimeout(this._persistTimer);
  }
}

module.exports = Client;
