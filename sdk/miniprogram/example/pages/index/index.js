// Home page. page_view (onShow), share (onShareAppMessage) and message_open (a touch_id in
// the query) are tracked by the SDK's Page wrapper; this page only tracks its own events.
const config = require('../../config');

const hl = getApp().hl;

function toast(title) {
  wx.showToast({ title: title, icon: 'none' });
}

Page({
  data: {
    keyword: '',
    optedOut: false,
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
      .catch(() => toast('订阅失败，请稍后再试'));
  },

  goCoupons() {
    wx.navigateTo({ url: '/pages/coupons/index' });
  },

  onOptOut() {
    hl.optOut()
      .then(() => {
        this.setData({ optedOut: true });
        toast('已关闭个性化推荐');
      })
      .catch(() => toast('操作失败，请稍后再试'));
  },

  onOptIn() {
    hl.optIn()
      .then(() => {
        this.setData({ optedOut: false });
        toast('已开启个性化推荐');
      })
      .catch(() => toast('操作失败，请稍后再试'));
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
          .then(() => toast('已删除'))
          .catch(() => toast('删除失败，请稍后再试'));
      },
    });
  },

  onShareAppMessage() {
    return { title: '校园外卖，新人立减5元', path: '/pages/index/index' };
  },
});
