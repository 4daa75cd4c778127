// Shapes of the API's replies (docs/api.md).

export interface TokenBuckets {
  input_uncached: number
  cache_read: number
  cache_write: number
  output: number
  reasoning: number
  unclassified: number
}

export interface Percentiles {
  p50: number | null
  p95: number | null
  p99: number | null
  count: number
}

export interface GroupRow {
  name: string
  other?: boolean
  call_count: number
  token_count: number
  error_count: number
  success_rate: number | null
  avg_time: number | null
  avg_ttft: number | null
  key_id?: number
  key_name?: string
}

export interface Stats {
  api_call_count: number
  total_tokens: number
  input_tokens: number
  output_tokens: number
  tokens: TokenBuckets
  success_count: number
  error_count: number
  success_rate: number | null
  avg_time: number | null
  latency: Percentiles
  ttft: Percentiles
  avg_ttft: number | null
  stream_count: number
  models: GroupRow[]
  keys: GroupRow[]
  endpoints: GroupRow[]
  providers: GroupRow[]
  credentials: GroupRow[]
  status_classes: GroupRow[]
}

export type Granularity = 'minute' | 'hour' | 'day' | 'week' | 'month'

export interface Trend {
  labels: string[]
  tokenData: number[]
  callData: number[]
  errorData: number[]
  latency: { p50: (number | null)[]; p95: (number | null)[] }
  starts: number[]
  ends: number[]
  granularity: Granularity
}

export interface History {
  labels: string[]
  starts: number[]
  ends: number[]
  callData: number[]
  tokenData: number[]
  errorData: number[]
  /** The part of each bucket counted from the daily rollups of deleted segments. */
  rolledUp: { callData: number[]; tokenData: number[] }
  rows: GroupRow[]
  group: string | null
  granularity: 'day' | 'month'
  range: { from: string; to: string; tz: string }
  log_oldest: string | null
}

export interface LogRow {
  id: number
  timestamp: string
  ts_ms: number
  method: string
  endpoint: string
  status: number
  success: boolean
  tokens: number
  duration: number | null
  model: string
  error: string
  key: string
  key_name?: string
  provider: string
  credential: string
  ttft_ms: number | null
  [field: string]: unknown
}

export interface KeyRecord {
  id: number
  name: string
  description: string
  key: string
  client_key_id: string
  scope: string
  enabled: boolean
  created_at: string
  last_used: string | null
  usage: { calls: number; tokens: number; errors: number }
  secret?: string
}

/** One collector from GET /api/console/sources. */
export interface Source {
  name: string
  address: string
  /** 'subscribe', 'poll/resp' or 'poll/http'. */
  mode: string
  state: string
  connected: boolean
  subscribed: boolean
  last_event: string | null
  lag_ms: number | null
  events: number
  duplicates: number
  invalid: number
  events_per_second: number
  reconnects: number
  auth_failures: number
}

/** The filters every read accepts. */
export interface Filters {
  model: string
  key: string
  endpoint: string
  provider: string
  credential: string
  status: string
}

export const FILTER_FIELDS = ['model', 'key', 'endpoint', 'provider', 'credential', 'status'] as const

export function emptyFilters(): Filters {
  return { model: '', key: '', endpoint: '', provider: '', credential: '', status: '' }
}
