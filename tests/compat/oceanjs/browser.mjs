// A real headless browser (Debian's chromium) loads a page from another origin and reads what it
// fetched from the provider. Usage: node browser.mjs <chromium> <page url> <report.json> <empty profile dir>.
// chromium is started here with the flags below and that fresh profile, then driven over CDP
// (playwright-core's connectOverCDP); the page itself sets window.c2dDone to its results.
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { chromium } from 'playwright-core'

const [executable, pageUrl, reportPath, profile] = process.argv.slice(2)
const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`,
  '--remote-debugging-port=0', 'about:blank']
// its own process group, so that every chromium process goes when it is stopped
const child = spawn(executable, flags, { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
const exited = new Promise((resolve) => child.on('exit', resolve))
let stderr = ''
const endpoint = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('chromium did not start:\n' + stderr)), 60000)
  child.stderr.on('data', (data) => {
    stderr += data.toString()
    const found = stderr.match(/DevTools listening on (ws:\/\/\S+)/)
    if (found) { clearTimeout(timer); resolve(found[1]) }
  })
  child.on('exit', (code) => reject(new Error(`chromium exited with ${code}:\n${stderr}`)))
})
const report = { consoleErrors: [] }
try {
  const browser = await chromium.connectOverCDP(endpoint)
  const context = browser.contexts()[0]
  const page = await context.newPage()
  page.on('console', (message) => { if (message.type() === 'error') report.consoleErrors.push(message.text()) })
  await page.goto(pageUrl)
  report.pageOrigin = await page.evaluate(() => window.location.origin)
  report.results = await page.waitForFunction(() => window.c2dDone, null, { timeout: 60000 }).then((h) => h.jsonValue())
  report.userAgent = await page.evaluate(() => navigator.userAgent)
  await browser.close()
} finally {
  try { process.kill(-child.pid, 'SIGKILL') } catch {}
  await exited
}
writeFileSync(reportPath, JSON.stringify(report, null, 2))
