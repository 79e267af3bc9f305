// ocean.js 8.6.2 (its public ProviderInstance API only) against `make run`'s stack at <api>/node.
// Usage: node driver.mjs <stack.json> <report.json>. Writes what every call answered; the pytest
// test (tests/compat/test_compat_ocean_js.py) checks it. Any exception fails the run.
import { readFileSync, writeFileSync } from 'node:fs'
import { JsonRpcProvider, Wallet } from 'ethers'
import { ProviderInstance } from '@oceanprotocol/lib'

const [stackPath, reportPath] = process.argv.slice(2)
const stack = JSON.parse(readFileSync(stackPath, 'utf8'))
const nodeUri = stack.providerUrl + '/node'
const report = { nodeUri, logChunksWhileRunning: [], statusesSeen: [] }
// ethers 6 caches identical RPC reads for 250 ms: turn that off (see DESIGN §6)
const chain = new JsonRpcProvider(stack.rpcUrl, undefined, { cacheTimeout: -1 })
const consumer = new Wallet(stack.consumerPrivateKey, chain)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const one = (jobs) => (Array.isArray(jobs) ? jobs[0] : jobs)

// The raw algorithm: logs while it runs (flushed, so the log grows line by line), then writes a result.
function algorithm(ticks, pause) {
  const rawcode = [
    'import json, os, sys, time',
    `for i in range(${ticks}):`,
    '    print(f"tick {i}", flush=True)',
    `    time.sleep(${pause})`,
    'out = os.path.join(os.environ.get("DATA_DIR", "/data"), "outputs", "ocean-js.json")',
    'json.dump({"dids": json.loads(os.environ.get("DIDS", "[]")), "ticks": ' + ticks + '}, open(out, "w"))',
    'print("done", flush=True)'
  ].join('\n')
  return {
    meta: {
      rawcode,
      language: 'python',
      version: '3',
      container: {
        entrypoint: 'python $ALGO', image: 'python', tag: '3.11-slim',
        checksum: 'sha256:' + 'a1'.repeat(32)
      }
    }
  }
}
const datasets = [{ documentId: stack.dataset.did, serviceId: stack.dataset.serviceId }]

async function text(iterable) {
  const parts = []
  for await (const chunk of iterable) parts.push(Buffer.from(chunk))
  return Buffer.concat(parts).toString('utf8')
}

async function waitFor(jobId, signerOrToken, done, onPoll) {
  const deadline = Date.now() + 120000
  for (;;) {
    const job = one(await ProviderInstance.computeStatus(nodeUri, signerOrToken, jobId))
    if (!report.statusesSeen.includes(job.status)) report.statusesSeen.push(job.status)
    if (onPoll) await onPoll(job)
    if (done(job)) return job
    if (Date.now() > deadline) throw new Error(`job ${jobId} stuck at ${job.status}`)
    await sleep(250)
  }
}

report.validProvider = await ProviderInstance.isValidProvider(nodeUri)
const environments = await ProviderInstance.getComputeEnvironments(nodeUri)
report.environments = environments
const environment = environments.find((env) => env.free)
if (!environment) throw new Error('no environment with a free tier')

// 1. a token
const token = await ProviderInstance.generateAuthToken(consumer, nodeUri)
report.token = token

// 2. a free job to status 70, its log streamed while it runs, its output downloaded
const started = one(await ProviderInstance.freeComputeStart(nodeUri, consumer, environment.id, datasets, algorithm(16, 0.5)))
report.freeStart = started
const finished = await waitFor(started.jobId, consumer, (job) => job.status >= 70 || [7, 8, 31, 32, 41, 62].includes(job.status),
  async (job) => {
    if (job.status === 40) {
      const stream = await ProviderInstance.computeStreamableLogs(nodeUri, consumer, started.jobId)
      if (stream) report.logChunksWhileRunning.push({ status: job.status, text: await text(stream) })
    }
  })
report.freeFinished = finished
const output = finished.results.find((item) => item.type === 'output')
const url = await ProviderInstance.getComputeResultUrl(nodeUri, consumer, started.jobId, output.index)
report.resultUrlHost = new URL(url).host
const downloaded = await fetch(url)
report.resultByUrl = { status: downloaded.status, text: await downloaded.text() }
report.resultByStream = await text(await ProviderInstance.getComputeResult(nodeUri, consumer, started.jobId, output.index))
report.logAfter = await text(await ProviderInstance.computeStreamableLogs(nodeUri, consumer, started.jobId))

// 2b. free jobs as ocean.js's docs write them: the published algorithm by documentId, and the
// consumer's own files (a fileObject dataset and algorithm.fileObject with its container)
async function freeRun(name, inputs, algo) {
  const job = one(await ProviderInstance.freeComputeStart(nodeUri, consumer, environment.id, inputs, algo))
  const ended = await waitFor(job.jobId, consumer, (j) => j.status >= 70 || [7, 8, 31, 32, 41, 62].includes(j.status))
  const result = ended.results.find((item) => item.type === 'output')
  report[name] = {
    started: job,
    finished: ended,
    output: result ? await text(await ProviderInstance.getComputeResult(nodeUri, consumer, job.jobId, result.index)) : null
  }
}
await freeRun('freePublished', datasets, { documentId: stack.algorithm.did, serviceId: stack.algorithm.serviceId })
const sampleContainer = { entrypoint: 'python $ALGO', image: 'python', tag: '3.11-slim', checksum: 'sha256:' + 'a1'.repeat(32) }
await freeRun('freeRawFiles',
  [{ fileObject: { type: 'url', url: stack.filesUrl + '/iris.csv', method: 'GET' } }],
  { fileObject: { type: 'url', url: stack.filesUrl + '/algorithm.py', method: 'GET' }, meta: { container: sampleContainer } })

// 2c. Ocean Node's job options as ocean.js sends them: metadata and an additional viewer, whose
// own ocean.js reads the job (status, result) but cannot stop it
const viewer = Wallet.createRandom().connect(chain)
const labelled = one(await ProviderInstance.freeComputeStart(nodeUri, consumer, environment.id, datasets, algorithm(1, 0),
  undefined, { purpose: 'compat', run: 1, final: true }, [viewer.address]))
report.optionsStart = labelled
const labelledDone = await waitFor(labelled.jobId, consumer, (j) => j.status >= 70 || [7, 8, 31, 32, 41, 62].includes(j.status))
report.viewerStatus = one(await ProviderInstance.computeStatus(nodeUri, viewer, labelled.jobId))
const labelledOutput = labelledDone.results.find((item) => item.type === 'output')
report.viewerResult = await text(await ProviderInstance.getComputeResult(nodeUri, viewer, labelled.jobId, labelledOutput.index))
report.viewerLog = await text(await ProviderInstance.computeStreamableLogs(nodeUri, viewer, labelled.jobId))
try {
  await ProviderInstance.computeStop(labelled.jobId, nodeUri, viewer)
  report.viewerStop = 'accepted'
} catch (error) {
  report.viewerStop = String(error.message)
}

// 3. a token-authorised start, its status with the token, a stop with the token
const tokenStart = one(await ProviderInstance.freeComputeStart(nodeUri, token, environment.id, datasets, algorithm(600, 0.5)))
report.tokenStart = tokenStart
await waitFor(tokenStart.jobId, token, (job) => job.status >= 40)
report.tokenStop = one(await ProviderInstance.computeStop(tokenStart.jobId, nodeUri, token))
report.afterStop = one(await ProviderInstance.computeStatus(nodeUri, token, tokenStart.jobId))

// 4. token invalidation, then the token is refused
report.invalidate = await ProviderInstance.invalidateAuthToken(consumer, token, nodeUri)
try {
  await ProviderInstance.computeStop(tokenStart.jobId, nodeUri, token)
  report.afterInvalidation = 'accepted'
} catch (error) {
  report.afterInvalidation = String(error.message)
}
report.logsAfterInvalidation = await ProviderInstance.computeStreamableLogs(nodeUri, token, tokenStart.jobId)

writeFileSync(reportPath, JSON.stringify(report, null, 2))
chain.destroy()
