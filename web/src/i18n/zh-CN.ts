import type en from './en'

const zh: typeof en = {
  app: { title: 'Tokenboard', signOut: '退出登录', theme: { light: '浅色', dark: '深色', toggle: '切换主题' }, language: '语言', timeZone: '时区', live: '实时', offline: '正在重连…' },
  nav: { dashboard: '仪表板', logs: '日志', history: '历史', keys: '密钥管理', export: '导出' },
  signin: {
    title: '登录 Tokenboard',
    hint: '粘贴管理员或只读令牌。令牌只保存在当前浏览器标签页中（sessionStorage）。',
    token: '令牌',
    submit: '登录',
    checking: '正在验证…',
    expired: '会话已失效（401 未授权）。请使用有效令牌重新登录。',
    invalid: '令牌被拒绝（401 未授权）。',
    forbidden: '此令牌无权读取控制台（403）。请使用管理员或只读令牌。',
    empty: '请先粘贴令牌。',
  },
  common: {
    loading: '加载中…', retry: '重试', apply: '应用', reset: '重置', cancel: '取消', save: '保存', close: '关闭',
    copy: '复制', copied: '已复制', yes: '是', no: '否', any: '全部', none: '—', other: '其他', error: '错误：{msg}',
  },
  range: { label: '时间范围', '1h': '最近 1 小时', '24h': '最近 24 小时', '7d': '最近 7 天', '30d': '最近 30 天', '90d': '最近 90 天', custom: '自定义', from: '开始', to: '结束', granularity: '粒度：{g}' },
  granularity: { minute: '分钟', hour: '小时', day: '天', week: '周', month: '月' },
  filters: { title: '筛选', model: '模型', key: '密钥', endpoint: '端点', provider: '供应商', credential: '凭据', status: '状态', statusAny: '全部状态', status429: '429（限流）', status5xx: '5xx（服务端错误）', statusError: '全部错误' },
  dash: {
    calls: '调用次数', tokens: 'Token 数', successRate: '成功率', errors: '错误数', latency: '延迟 p50 / p95', ttft: '首字延迟 p50 / p95',
    perMinute: '当前每分钟', callsPerMin: '{n} 次调用', tokensPerMin: '{n} 个 Token',
    successOf: '{total} 次中 {ok} 次成功', streams: '{n} 次流式',
    trend: '趋势', callsSeries: '调用', errorsSeries: '错误', tokensSeries: 'Token', latencyTrend: '延迟', p50: 'p50', p95: 'p95',
    showData: '显示数据表', bucket: '时段开始', top: { models: '热门模型', keys: '热门密钥', providers: '热门供应商', credentials: '热门凭据' },
    status: '状态分布', share: '占比', callsCol: '调用', tokensCol: 'Token', errorsCol: '错误', name: '名称',
  },
  history: {
    span: '跨度', per: '粒度', group: '分组', days: '最近 {n} 天', utcDay: 'UTC 日期', range: '{from} 至 {to}（UTC）',
    hint: '按 UTC 日或月汇总。已被保留策略从日志中删除的调用仍会计入，数据来自为其保存的每日汇总。',
    logFrom: '日志本身从 {date} 开始。',
    rolled: '来自汇总', rolledSub: '已不在日志中的调用', rolledCol: '来自汇总', trend: '调用量与 Token 随时间变化',
    callsSeries: '调用', rolledSeries: '来自汇总的调用', tokensSeries: 'Token',
    by: { model: '按模型', key: '按密钥', provider: '按服务商', credential: '按凭证', status: '按状态类别' },
  },
  sources: {
    title: '采集源', name: '名称', address: '地址', mode: '模式', status: '状态', lastEvent: '最近事件', lag: '延迟', rate: '事件/秒',
    events: '事件数', duplicates: '重复', invalid: '无效', reconnects: '重连次数', authFailures: '登录被拒', never: '暂无',
    badge: { subscribed: '已订阅', polling: '轮询中', connecting: '连接中', reconnecting: '重连中', refused: '密钥被拒' },
  },
  tokens: { input_uncached: '输入（未缓存）', cache_read: '缓存读取', cache_write: '缓存写入', output: '输出', reasoning: '推理', unclassified: '未分类' },
  empty: {
    title: '此时间范围内还没有调用',
    body: 'Tokenboard 展示网关上报的数据。使用 ingest 或管理员令牌发送第一个事件，例如：',
    after: '一秒内即会显示在这里，无需刷新。',
    noRows: '没有符合筛选条件的调用。',
  },
  logs: {
    time: '时间', method: '方法', endpoint: '端点', model: '模型', key: '密钥', status: '状态', tokens: 'Token', duration: '耗时', ttft: '首字延迟', error: '错误',
    loadMore: '加载更多', end: '没有更早的调用了。', liveTail: '实时追踪', liveTailOff: '实时追踪需要截止到现在的时间范围。', rows: '已显示 {n} 行', minLatency: '最小延迟（毫秒）',
    detail: '调用 #{id}', newRows: '{n} 条新调用', skipped: '另有 {n} 条未实时推送；刷新即可查看。',
  },
  fields: {
    id: 'ID', timestamp: '时间', ts_ms: '时间（毫秒时间戳）', method: '方法', endpoint: '端点', status: '状态码', success: '成功', tokens: 'Token（合计）', duration: '耗时（毫秒）',
    model: '模型', model_alias: '请求的模型', provider: '供应商', credential: '凭据', key: '密钥', key_name: '密钥名称', error: '错误', error_class: '错误类别',
    input_uncached: '输入（未缓存）', cache_read: '缓存读取', cache_write: '缓存写入', output: '输出', reasoning: '推理', unclassified: '未分类', quality: 'Token 质量',
    ttft_ms: '首字延迟（毫秒）', stream: '流式', request_id: '请求 ID', user: '用户', instance: '实例', event_id: '事件 ID', ts_clamped: '时间已校正',
  },
  keys: {
    title: 'API 密钥', create: '创建密钥', name: '名称', description: '描述', scope: '权限范围', enabled: '启用', created: '创建时间', lastUsed: '最近使用', usage: '用量', value: '密钥',
    usageText: '{calls} 次调用 · {tokens} Token · {errors} 次错误', never: '从未', edit: '编辑', enable: '启用', disable: '停用', delete: '删除',
    confirmDelete: '删除“{name}”？使用它的客户端将无法继续工作。', confirm: '删除', disabled: '已停用', actions: '操作',
    scopes: { gateway: 'gateway — 用量归属', read: 'read — 只读控制台', ingest: 'ingest — 上报事件', admin: 'admin — 全部权限' },
    createdTitle: '密钥已创建', secretWarning: '完整密钥只显示这一次。请立即复制并妥善保存；之后只能看到掩码形式。',
    done: '我已保存', none: '还没有密钥。为每个客户端或网关创建一个。', limit: '已达到密钥数量上限：{msg}', forbidden: '此令牌为只读：创建、编辑或删除密钥需要管理员令牌。',
    namePlaceholder: '例如 team-alpha', descPlaceholder: '可选',
  },
  export: {
    title: '导出', hint: '下载筛选后的调用记录，按时间从早到晚，不限行数。时间使用所选时区。', format: '格式',
    csv: 'CSV（电子表格）', ndjson: 'NDJSON（每行一条调用）', json: 'JSON（统计、密钥和调用）', download: '下载', downloading: '正在下载…', done: '已保存 {name}（{size}）。',
  },
}
export default zh
