#!/usr/bin/env node
// The results of a cache-tests run (scripts/cache-tests), one line per test, with the
// suite's own verdicts (which follow each test's dependencies) and a count by kind.
// Usage:
//   node cache-tests-summary.mjs SUITE_DIR RESULTS.json            # every test
//   node cache-tests-summary.mjs SUITE_DIR RESULTS.json --failing  # those that did not pass
//   node cache-tests-summary.mjs SUITE_DIR RESULTS.json --must     # only "must" tests
//   node cache-tests-summary.mjs SUITE_DIR RESULTS.json --json     # an array, not text
// Flags can be combined. Output columns (tab-separated):
//   status  verdict  kind  suite  id  name  [message]
// status : PASS | FAIL (assertion) | SETUP (setup/precondition failed) | ERROR (harness/network
//          error, e.g. "fetch failed", AbortError) | UNTESTED (not in results, e.g. browser_only)
// verdict: upstream classification from test-engine/lib/results.mjs, honouring depends_on:
//          pass, fail, optional_fail, yes, no, setup_fail, harness_fail, dependency_fail, retry, untested
// kind   : MUST (kind 'required' or unset: spec requirement), OPTIMAL (kind 'optimal': "should",
//          an optimisation), CHECK (kind 'check': informational, no right answer)
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const args = process.argv.slice(2)
const [suiteDir, file] = args.filter(a => !a.startsWith('--'))
if (!file) {
  console.error('usage: node cache-tests-summary.mjs SUITE_DIR RESULTS.json [--failing] [--must] [--json]')
  process.exit(2)
}
const fromSuite = (...parts) => pathToFileURL(path.join(suiteDir, ...parts)).href
const tests = (await import(fromSuite('tests', 'index.mjs'))).default
const { resultTypes, determineTestResult } = await import(fromSuite('test-engine', 'lib', 'results.mjs'))
const onlyFailing = args.includes('--failing')
const onlyMust = args.includes('--must')
const asJson = args.includes('--json')

const results = JSON.parse(fs.readFileSync(file, 'utf8'))

const verdictName = new Map(Object.entries(resultTypes).map(([k, v]) => [v, k]))
const kindName = k => (k === undefined || k === 'required') ? 'MUST' : k === 'optimal' ? 'OPTIMAL' : k === 'check' ? 'CHECK' : String(k).toUpperCase()

const rows = []
const known = new Set()
for (const suite of tests) {
  for (const test of suite.tests) {
    known.add(test.id)
    const r = results[test.id]
    let status, message = ''
    if (r === undefined) {
      status = 'UNTESTED'
      message = test.browser_only ? '(browser_only test; skipped for non-browser caches)' : ''
    } else if (r === true) {
      status = 'PASS'
    } else if (Array.isArray(r)) {
      message = r[1] || ''
      status = r[0] === 'Assertion' ? 'FAIL' : r[0] === 'Setup' ? 'SETUP' : 'ERROR'
      if (status === 'ERROR') message = `${r[0]}: ${message}`
    } else {
      status = 'ERROR'
      message = JSON.stringify(r)
    }
    let verdict
    try {
      verdict = verdictName.get(determineTestResult(tests, test.id, results, true)) || '?'
    } catch (e) {
      verdict = 'error:' + e.message
    }
    rows.push({
      status,
      verdict,
      kind: kindName(test.kind),
      suite: suite.id,
      suite_name: suite.name,
      id: test.id,
      name: test.name,
      message,
      depends_on: test.depends_on || []
    })
  }
}
for (const id of Object.keys(results)) {
  if (!known.has(id)) rows.push({ status: 'UNKNOWN', verdict: '?', kind: '?', suite: '?', suite_name: '?', id, name: '(id not in tests/index.mjs)', message: JSON.stringify(results[id]), depends_on: [] })
}

const shown = rows.filter(r => (!onlyFailing || (r.status !== 'PASS' && r.status !== 'UNTESTED')) && (!onlyMust || r.kind === 'MUST'))

if (asJson) {
  console.log(JSON.stringify(shown, null, 2))
} else {
  for (const r of shown) {
    console.log([r.status, r.verdict, r.kind, r.suite, r.id, r.name, r.message].join('\t'))
  }
  const count = (pred) => rows.filter(pred).length
  const ran = rows.filter(r => r.status !== 'UNTESTED')
  console.error(`\n# ${rows.length} tests defined, ${ran.length} in results`)
  for (const kind of ['MUST', 'OPTIMAL', 'CHECK']) {
    const k = ran.filter(r => r.kind === kind)
    const c = s => k.filter(r => r.status === s).length
    console.error(`# ${kind.padEnd(7)} total ${String(k.length).padStart(3)}  pass ${String(c('PASS')).padStart(3)}  fail ${String(c('FAIL')).padStart(3)}  setup ${String(c('SETUP')).padStart(3)}  error ${String(c('ERROR')).padStart(3)}`)
  }
  console.error(`# MUST tests failing (assertion, dependencies passed): ${count(r => r.kind === 'MUST' && r.verdict === 'fail')}`)
}
