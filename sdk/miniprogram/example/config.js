// Ids the merchant copies from the Huiliu dashboard and the WeChat admin console.
module.exports = {
  // Subscribe-message template ids (公众平台 → 订阅消息): at most 3 per prompt.
  subscribeTemplates: ['REPLACE_WITH_YOUR_TEMPLATE_ID'],
  // Claimable coupon templates (Huiliu dashboard → 券模板; ids from GET /admin/v1/coupon-templates).
  claimable: [
    // The two claimable templates of `python app.py seed-demo` (ids 1 and 4 on a fresh database).
    { templateId: 1, name: '新人立减5元', desc: '满15元可用' },
    { templateId: 4, name: '奶茶第二杯减6元', desc: '满18元可用 · 东门奶茶' },
  ],
};
