// Home page. page_view (onShow), share (onShareAppMessage) and message_open (a touch_id in
// the query) are tracked by the SDK's Page wrapper; this page only tracks its own events.
const config = require('../../config');

const hl = getApp().hl;

// The page's own memory of the choice, for the button (the SDK keeps its own flag).

function toast(title) {
  wx.showToast({ title: title, icon: 'none' });
}

Page({
  data: {
    keyword: '',
    optedOut: false,
  },

  onLoad() {
    this.setData({ optedOut: hl.isOptedOut() });
  },

  onKeywordInput(e) {
    this.setData({ keyword: e.detail.value });
  },

  onSearch() {
    const keyword = this.data.keyword.trim();
    if (!keyword) return;
    hl.track('search', { query: keyword });
    toast('搜索：' + keyword);
  },

  onAddToCart(e) {
    hl.track('add_to_cart', { item: e.currentTarget.dataset.item });
    toast('已加入购物车');
  },

  // WeChat shows the subscribe prompt only from a tap handler like this one.
  onSubscribe() {
    hl.requestSubscribe(config.subscribeTemplates)
      .then((answer) => {
        const left = answer.allowances || {};
        const accepted = config.subscribeTemplates.some((id) => left[id] > 0);
        toast(accepted ? '订阅成功，上新时提醒你' : '已取消订阅');
      })
      .catch((err) => {
        if (err && err.pending) toast('网络不佳，稍后自动提交');
        else if (err && err.code === 'opted_out') toast('你已关闭个性化推荐');
        else toast('订阅失败，请稍后再试');
      });
  },

  goCoupons() {
    wx.navigateTo({ url: '/pages/coupons/index' });
  },

  // The choice holds on the phone at once; the SDK keeps telling the server until it hears it.
  onOptOut() {
    const done = hl.optOut();
    this.setData({ optedOut: hl.isOptedOut() });
    done.then(
      () => toast('已关闭个性化推荐'),
      () => toast('已关闭，联网后同步')
    );
  },

  onOptIn() {
    const done = hl.optIn();
    this.setData({ optedOut: hl.isOptedOut() });
    done.then(
      () => toast('已开启个性化推荐'),
      () => toast('已开启，联网后同步')
    );
  },

  onMyData() {
    hl.myData()
      .then((data) => {
        wx.showModal({
          title: '我的数据',
          content:
            '行为记录 ' + (data.events || []).length + ' 条，订单 ' + (data.orders || []).length +
            ' 笔，优惠券 ' + (data.coupons || []).length + ' 张。',
          showCancel: false,
        });
      })
      .catch(() => toast('获取失败，请稍后再试'));
  },

  onErase() {
    wx.showModal({
      title: '删除我的数据',
      content: '将删除你在本小程序的行为记录、优惠券和订阅，且无法恢复。确定吗？',
      confirmColor: '#e64340',
      success: (res) => {
        if (!res.confirm) return;
        hl.eraseMe()
          .then(() => toast('已删除')) // an opt-out survives the erasure, so the button stays
          .catch(() => toast('删除失败，请稍后再试'));
      },
    });
  },

  onShareAppMessage() {
    return { title: '校园外卖，新人立减5元', path: '/pages/index/index' };
  },
});
