'use strict';
// An in-memory stand-in for Huiliu's /mp/v1 API, close enough to the real one for unit tests:
// tokens per login, events deduplicated per (user, id), idempotent claim/subscribe/redeem,
// opt-out, export and erase. Answers are {status, data, header}.

function err(status, code, message, header) {
  return { status: status, data: { error: { code: code, message: message || code } }, header: header || {} };
}

class FakeApi {
  constructor(opts) {
    const o = opts || {};
    this.ttl = o.ttl || 7200; // expires_in, seconds
    this.now = () => Date.now();
    this.seq = 0;
    this.tokens = new Map(); // token -> {openid, exp}
    this.users = new Map(); // openid -> {events: Map(id -> event), optOut, coupons: [], answers: Map}
    this.rejectTypes = new Set(o.rejectTypes || []);
    this.cards = o.cards || [];
    this.templates = o.templates || { 1: { name: '新人立减5元', amount_off_fen: 500, min_spend_fen: 1500, per_user_limit: 1 } };
    this.logins = 0;
  }
  user(openid) {
    if (!this.users.has(openid)) {
      this.users.set(openid, { events: new Map(), optOut: false, coupons: [], claims: new Map(), subs: new Map(), allowances: {} });
    }
    return this.users.get(openid);
  }
  // every stored event of every user, as [openid, event]
  stored() {
    const out = [];
    for (const [openid, u] of this.users) for (const e of u.events.values()) out.push([openid, e]);
    return out;
  }
  auth(req) {
    const h = req.header || {};
    const m = /^Bearer (.+)$/.exec(h.Authorization || h.authorization || '');
    if (!m) return { fail: err(401, 'missing_token') };
    const t = this.tokens.get(m[1]);
    if (!t) return { fail: err(401, 'invalid_token') };
    if (t.exp <= this.now()) return { fail: err(401, 'token_expired') };
    if (!this.users.has(t.openid)) return { fail: err(401, 'invalid_token', "the token's user no longer exists; log in again") };
    return { openid: t.openid, user: this.users.get(t.openid) };
  }
  handle(req) {
    const path = req.path;
    const body = req.data;
    if (req.method === 'POST' && path === '/mp/v1/login') {
      if (!body || typeof body.code !== 'string') return err(400, 'invalid_request');
      const openid = body.code.replace(/^code-/, '').replace(/-\d+$/, '');
      this.logins++;
      this.user(openid);
      const token = 'tok-' + ++this.seq;
      this.tokens.set(token, { openid: openid, exp: this.now() + this.ttl * 1000 });
      return { status: 200, data: { token: token, expires_in: this.ttl } };
    }
    const a = this.auth(req);
    if (a.fail) return a.fail;
    const u = a.user;
    if (req.method === 'POST' && path === '/mp/v1/events') {
      if (!body || !Array.isArray(body.events)) return err(400, 'invalid_request', 'events: required');
      if (body.events.length > 500) return err(400, 'batch_too_large');
      let accepted = 0;
      let duplicates = 0;
      const rejected = [];
      body.events.forEach((e, i) => {
        if (this.rejectTypes.has(e.type)) return rejected.push({ index: i, error: 'type: not allowed here' });
        if (u.events.has(e.id)) return duplicates++;
        u.events.set(e.id, e);
        accepted++;
      });
      return { status: 200, data: { accepted: accepted, duplicates: duplicates, rejected: rejected } };
    }
    if (req.method === 'POST' && path === '/mp/v1/coupons/claim') {
      if (body.id && u.claims.has(body.id)) return { status: 200, data: u.claims.get(body.id) };
      const tpl = this.templates[body.template_id];
      if (!tpl) return err(404, 'template_not_found');
      const mine = u.coupons.filter((c) => c.template_id === body.template_id).length;
      if (mine >= (tpl.per_user_limit || 1)) return err(409, 'per_user_limit');
      const c = { id: ++this.seq, template_id: body.template_id, name: tpl.name, amount_off_fen: tpl.amount_off_fen, min_spend_fen: tpl.min_spend_fen, status: 'issued', order_id: null };
      u.coupons.push(c);
      if (body.id) u.claims.set(body.id, c);
      return { status: 201, data: c };
    }
    let m = /^\/mp\/v1\/coupons\/(\d+)\/redeem$/.exec(path);
    if (req.method === 'POST' && m) {
      const c = u.coupons.find((x) => x.id === Number(m[1]));
      if (!c) return err(404, 'coupon_not_found');
      if (c.status === 'redeemed') return c.order_id === body.order_id ? { status: 200, data: c } : err(409, 'already_redeemed');
      if (body.order_amount_fen < c.min_spend_fen) return err(409, 'below_min_spend');
      c.status = 'redeemed';
      c.order_id = body.order_id;
      return { status: 200, data: c };
    }
    if (req.method === 'GET' && path === '/mp/v1/coupons') return { status: 200, data: { coupons: u.coupons } };
    if (req.method === 'POST' && path === '/mp/v1/subscriptions') {
      if (body.id && u.subs.has(body.id)) return { status: 200, data: { allowances: u.allowances, duplicate: true } };
      Object.keys(body.results || {}).forEach((k) => {
        if (body.results[k] === 'accept') u.allowances[k] = (u.allowances[k] || 0) + 1;
      });
      if (body.id) u.subs.set(body.id, true);
      return { status: 200, data: { allowances: Object.assign({}, u.allowances), duplicate: false } };
    }
    if (req.method === 'GET' && path === '/mp/v1/reengagement') {
      const cards = this.cards;
      this.cards = [];
      return { status: 200, data: { cards: cards } };
    }
    if (req.method === 'POST' && path === '/mp/v1/me/opt-out') {
      u.optOut = true;
      return { status: 200, data: { marketing_opt_out: true } };
    }
    if (req.method === 'POST' && path === '/mp/v1/me/opt-in') {
      u.optOut = false;
      return { status: 200, data: { marketing_opt_out: false } };
    }
    if (req.method === 'GET' && path === '/mp/v1/me/data') {
      return { status: 200, data: { profile: { openid: a.openid }, events: Array.from(u.events.values()), coupons: u.coupons } };
    }
    if (req.method === 'DELETE' && path === '/mp/v1/me') {
      const n = u.events.size;
      this.users.delete(a.openid);
      return { status: 200, data: { erased: { events: n } } };
    }
    return err(404, 'not_found');
  }
}

module.exports = { FakeApi, err };
