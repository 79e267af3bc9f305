// The operator's console in a real headless browser (Debian's chromium, driven over CDP by
// playwright-core): opens the URL `make run` prints (it signs in with the local admin key), waits
// for the dashboard, checks a job is listed, stops a running job with its Stop button, and takes
// a screenshot. Usage: node console.mjs <chromium> <console url> <job to see> <job to stop>
//                      <report.json> <screenshot.png> <empty profile dir>
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { chromium } from 'playwright-core'

const [executable, consoleUrl, seeJob, stopJob, reportPath, screenshotPath, profile] = process.argv.slice(2)
const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`,
  '--remote-debugging-port=0', '--window-size=1280,1600', 'about:blank']
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
const report = { consoleErrors: [], requests: [] }
try {
  const browser = await chromium.connectOverCDP(endpoint)
  const context = browser.contexts()[0]
  const page = await context.newPage()
  await page.setViewportSize({ width: 1280, height: 1600 })
  page.on('console', (message) => { if (message.type() === 'error') report.consoleErrors.push(message.text()) })
  page.on('request', (request) => report.requests.push(request.url()))
  await page.goto(consoleUrl)
  await page.waitForSelector('body[data-ready="true"]', { timeout: 60000 })
  report.addressBar = page.url()
  report.signedInAs = await page.textContent('#who')
  report.seen = await page.locator(`#jobs tr[data-job-id="${seeJob}"] td.status`).textContent()
  const running = page.locator(`#active tr[data-job-id="${stopJob}"]`)
  report.runningBefore = await running.locator('td.status').textContent()
  await running.locator('button').click()
  await page.waitForFunction((id) => !document.querySelector(`#active tr[data-job-id="${id}"]`) &&
    document.querySelector(`#jobs tr[data-job-id="${id}"] td.status`)?.textContent.startsWith('7 '), stopJob, { timeout: 60000 })
  report.stoppedStatus = await page.locator(`#jobs tr[data-job-id="${stopJob}"] td.status`).textContent()
  report.environments = await page.locator('#environments tbody tr').count()
  report.sessionStored = await page.evaluate(() => Boolean(sessionStorage.getItem('c2d-admin-session')))
  await page.screenshot({ path: screenshotPath, fullPage: false })
  await browser.close()
} finally {
  try { process.kill(-child.pid, 'SIGKILL') } catch {}
  await exited
}
writeFileSync(reportPath, JSON.stringify(report, null, 2))
