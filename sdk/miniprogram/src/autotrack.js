'use strict';
// Automatic events. The app is followed through wx.onAppShow / wx.onAppHide (App itself is not
// wrapped); pages through a replacement of the global Page that adds hooks to onLoad, onShow
// and onShareAppMessage and then calls the page's own method.

// A page query small enough to ride along in a page_view (props are capped at 2 KB).
function smallQuery(q) {
  if (!q || typeof q !== 'object') return {};
  try {
    return JSON.stringify(q).length <= 1024 ? q : {};
  } catch (e) {
    return {};
  }
}

function before(def, name, hook) {
  const own = def[name];
  def[name] = function () {
    try {
      hook.apply(this, arguments);
    } catch (e) {
      // tracking must never break the page
    }
    if (typeof own === 'function') return own.apply(this, arguments);
  };
}

function hookPage(def, state) {
  const on = () => state.client.o.autoTrack;
  before(def, 'onLoad', function (query) {
    this.__huiliuQuery = query || {};
    if (on().messageOpen) state.client._opened(query, this.route);
  });
  before(def, 'onShow', function () {
    if (on().pageView) {
      state.client._auto('page_view', { page: this.route || '', query: smallQuery(this.__huiliuQuery || this.options) });
    }
  });
  // Only hooked when the page defines it: adding one would turn on the page's share menu.
  if (typeof def.onShareAppMessage === 'function') {
    before(def, 'onShareAppMessage', function () {
      if (on().share) state.client._auto('share', { page: this.route || '' });
    });
  }
}

function wrapPage(client) {
  if (typeof Page !== 'function') return;
  if (Page.__huiliu) {
    Page.__huiliu.client = client;
    return;
  }
  const own = Page;
  const state = { client: client };
  const wrapped = function (def) {
    if (def && typeof def === 'object') hookPage(def, state);
    return own.apply(this, arguments);
  };
  wrapped.__huiliu = state;
  Page = wrapped; // eslint-disable-line no-global-assign
}

function install(c) {
  const a = c.o.autoTrack;
  let launch = {};
  try {
    launch = c.wx.getLaunchOptionsSync() || {};
  } catch (e) {
    launch = {};
  }
  // The launch counts as the first show: the wx.onAppShow that follows it adds no app_open.
  c._fg = true;
  c._since = Date.now();
  if (a.appOpen) c._auto('app_open', { scene: launch.scene, path: launch.path });
  if (a.messageOpen) c._opened(launch.query, launch.path);
  try {
    c.wx.onAppShow((o) => c._onShow(o || {}));
    c.wx.onAppHide(() => c._onHide());
  } catch (e) {
    c._warn('cannot listen to app show/hide', e);
  }
  if (a.pageView || a.share || a.messageOpen) wrapPage(c);
}

module.exports = { install, wrapPage, smallQuery };
