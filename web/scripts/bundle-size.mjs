// Prints the gzipped size of the JavaScript the console loads first (index.html's scripts and
// module preloads) and of all JavaScript in dist; exits 1 when the first load is over the budget.
import { readFileSync, readdirSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { join } from 'node:path'

const budget = Number(process.argv[2] ?? 250) * 1000
const dist = new URL('../dist/', import.meta.url).pathname
const html = readFileSync(join(dist, 'index.html'), 'utf8')
const gz = (file) => gzipSync(readFileSync(join(dist, file)), { level: 9 }).length
const first = new Set([...html.matchAll(/(?:src|href)="\.\/(assets\/[^"]+\.js)"/g)].map((m) => m[1]))
const all = readdirSync(join(dist, 'assets')).filter((f) => f.endsWith('.js')).map((f) => `assets/${f}`)
const kb = (n) => `${(n / 1000).toFixed(1)} kB`
let firstTotal = 0
for (const f of first) firstTotal += gz(f)
const allTotal = all.reduce((s, f) => s + gz(f), 0)
console.log(`first-load JS: ${kb(firstTotal)} gzipped (${first.size} files); all JS: ${kb(allTotal)} gzipped (${all.length} files); budget ${kb(budget)}`)
if (first.size === 0) {
  console.error('no JavaScript referenced from dist/index.html')
  process.exit(1)
}
if (firstTotal > budget) {
  console.error(`first-load JS over budget: ${kb(firstTotal)} > ${kb(budget)}`)
  process.exit(1)
}
