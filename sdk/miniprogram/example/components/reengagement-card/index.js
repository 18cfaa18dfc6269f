// Welcome-back card: shows the cards GET /mp/v1/reengagement returned (through the Huiliu
// client's reengagement()), each with the coupon it carries, and on a tap opens the card's
// page with touch_id in the query. The SDK's Page wrapper then tracks message_open for that
// touch in the page's onLoad, so the campaign's funnel counts the open.
//
// ES2015 only: the mini-program runtime runs this file as is.

// The client is the one app.js made with huiliu.init() and kept as App({ hl }).
function defaultClient() {
  const app = typeof getApp === 'function' ? getApp() : null;
  return app && app.hl ? app.hl : null;
}

// Fen to a yuan string without trailing zeros: 500 -> "5", 650 -> "6.5", 1999 -> "19.99".
function yuan(fen) {
  return String(Math.round(fen) / 100);
}

// The card's page with touch_id appended; navigateTo needs an absolute path.
function pageWithTouch(page, touchId) {
  const url = page.charAt(0) === '/' ? page : '/' + page;
  const glue = url.indexOf('?') === -1 ? '?' : '&';
  return url + glue + 'touch_id=' + encodeURIComponent(String(touchId));
}

function couponView(coupon) {
  if (!coupon || coupon.status !== 'issued') return null;
  return {
    id: coupon.id,
    name: coupon.name,
    amount: yuan(coupon.amount_off_fen),
    rule: coupon.min_spend_fen > 0 ? '满' + yuan(coupon.min_spend_fen) + '元可用' : '无门槛',
    expires: coupon.expires_at ? String(coupon.expires_at).slice(0, 10) : '',
  };
}

Component({
  options: { addGlobalClass: false },

  properties: {
    // Leave false on the page that should show the cards: fetching marks them opened on
    // the server, so each card is fetched (and shown) once.
    manual: { type: Boolean, value: false },
  },

  data: {
    items: [],
  },

  lifetimes: {
    attached() {
      if (!this.data.manual) this.load();
    },
  },

  methods: {
    // Tests (or a page) may set this.client / this.navigate before load() or a tap.
    getClient() {
      return this.client || defaultClient();
    },

    load() {
      const hl = this.getClient();
      if (!hl) return Promise.resolve([]);
      return hl
        .reengagement()
        .then((cards) => {
          cards = cards || [];
          const wantsCoupons = cards.some((c) => c.coupon_id != null);
          const coupons = wantsCoupons
            ? hl.coupons.list().catch(() => [])
            : Promise.resolve([]);
          return coupons.then((list) => {
            const byId = {};
            (list || []).forEach((c) => {
              byId[c.id] = c;
            });
            const items = cards.map((card) => ({
              id: card.id,
              title: card.title || '欢迎回来',
              text: card.text,
              page: card.page || '',
              coupon: card.coupon_id != null ? couponView(byId[card.coupon_id]) : null,
            }));
            this.setData({ items: items });
            return items;
          });
        })
        .catch(() => {
          // No card is better than a broken home page; the SDK logs the failure in debug.
          return [];
        });
    },

    onTap(e) {
      const index = Number(e.currentTarget.dataset.index);
      const item = this.data.items[index];
      if (!item) return;
      this.remove(index);
      if (!item.page) return; // fetching already counted the card as opened
      const url = pageWithTouch(item.page, item.id);
      this.triggerEvent('open', { touchId: item.id, url: url });
      const navigate = this.navigate || ((opts) => wx.navigateTo(opts));
      navigate({
        url: url,
        fail: () => {
          // navigateTo refuses tabBar pages; reLaunch opens them and keeps the query.
          wx.reLaunch({ url: url });
        },
      });
    },

    onClose(e) {
      this.remove(Number(e.currentTarget.dataset.index));
    },

    remove(index) {
      const items = this.data.items.slice();
      items.splice(index, 1);
      this.setData({ items: items });
    },
  },
});
