// Coupon centre: claim the merchant's claimable templates and list the user's coupons.
// Opened from a message or a card, the query carries touch_id and the SDK's Page wrapper
// tracks message_open; nothing to do here for that.
const config = require('../../config');

const hl = getApp().hl;

// Why a claim was refused, by the API's error code.
const CLAIM_ERRORS = {
  opted_out: '你已关闭个性化推荐，无法领券',
  per_user_limit: '你已经领过这张券了',
  budget_exhausted: '券已经被领完了',
  template_inactive: '活动已结束',
  not_claimable: '这张券不能直接领取',
  template_not_found: '券不存在',
};

const STATUS = { issued: '可使用', redeemed: '已使用', expired: '已过期' };

function yuan(fen) {
  return String(fen / 100);
}

function couponView(c) {
  return {
    id: c.id,
    name: c.name,
    amount: yuan(c.amount_off_fen),
    rule: c.min_spend_fen > 0 ? '满' + yuan(c.min_spend_fen) + '元可用' : '无门槛',
    expires: String(c.expires_at || '').slice(0, 10),
    status: c.status,
    statusText: STATUS[c.status] || c.status,
  };
}

Page({
  data: {
    claimable: config.claimable,
    mine: [],
    loading: true,
    claiming: 0,
  },

  onShow() {
    hl.track('coupon_view', {});
    this.refresh();
  },

  onPullDownRefresh() {
    this.refresh().then(() => wx.stopPullDownRefresh());
  },

  refresh() {
    return hl.coupons
      .list()
      .then((coupons) => this.setData({ mine: coupons.map(couponView), loading: false }))
      .catch(() => this.setData({ loading: false })); // e.g. opted out: show none
  },

  onClaim(e) {
    const templateId = Number(e.currentTarget.dataset.id);
    if (this.data.claiming) return; // one tap, one claim
    this.setData({ claiming: templateId });
    hl.coupons
      .claim(templateId)
      .then((coupon) => {
        wx.showToast({ title: '领取成功：' + coupon.name, icon: 'none' });
        return this.refresh();
      })
      .catch((err) => {
        // pending: no answer yet; the SDK sends the same claim again and it issues one coupon.
        const title = err && err.pending
          ? '网络不佳，稍后自动领取'
          : CLAIM_ERRORS[err && err.code] || '领取失败，请稍后再试';
        wx.showToast({ title: title, icon: 'none' });
      })
      .then(() => this.setData({ claiming: 0 }));
  },
});
