// A consumer written with ocean.js 3.x (`@oceanprotocol/lib` 3.4.6, the Provider-era client)
// running the compute flow against our provider's root (the v4 protocol).
//
//   node driver.cjs STACK_JSON REPORT_JSON
//
// Every provider call goes through ocean.js's `ProviderInstance` unchanged; orders go through its
// own `Datatoken.startOrder` / `reuseOrder` with what initializeCompute answered, as an ocean.js
// dApp does. It fails (non-zero exit, the error on stderr) on the first call that does not work,
// and otherwise writes REPORT_JSON, what each call answered, for
// tests/compat/test_compat_ocean_js3.py to check.
'use strict'

const fs = require('fs')
const { ethers } = require('ethers')
const { ProviderInstance, Datatoken } = require('@oceanprotocol/lib')

const TERMINAL = new Set([7, 8, 31, 32, 41, 62, 70])
const ERC20 = ['function approve(address spender, uint256 amount) returns (bool)']
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function approveFee (wallet, datatoken, fee) {
  // The datatoken pulls a non-zero provider fee from the payer, who approves it first.
  if (BigInt(fee.providerFeeAmount) === 0n) return
  const token = new ethers.Contract(fee.providerFeeToken, ERC20, wallet)
  await (await token.approve(datatoken, fee.providerFeeAmount)).wait()
}

async function pay (wallet, chainId, answer, assets) {
  // One order per input, in the order initializeCompute answered: datasets, then the algorithm.
  const datatokens = new Datatoken(wallet, chainId)
  const items = [...answer.datasets, answer.algorithm]
  const done = []
  for (const [index, item] of items.entries()) {
    const asset = assets[index]
    await approveFee(wallet, asset.datatoken, item.providerFee)
    // ocean.js 3.x answers the mined transaction (null when sending failed).
    const sent = item.validOrder
      ? await datatokens.reuseOrder(asset.datatoken, item.validOrder, item.providerFee)
      : await datatokens.startOrder(asset.datatoken, wallet.address, asset.serviceIndex, item.providerFee)
    if (!sent) throw new Error(`order ${index} was not sent`)
    done.push(item.validOrder ? 'reuseOrder' : 'startOrder')
    asset.transferTxId = sent.hash
  }
  return done
}

function computeAsset (asset) {
  return { documentId: asset.did, serviceId: asset.serviceId, transferTxId: asset.transferTxId }
}

async function untilTerminal (url, address, jobId, did, timeoutMs = 120000) {
  const seen = []
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const [status] = await ProviderInstance.computeStatus(url, address, jobId, did)
    if (seen[seen.length - 1] !== status.status) seen.push(status.status)
    if (TERMINAL.has(status.status)) return { status, seen }
    await sleep(300)
  }
  throw new Error(`job ${jobId} did not end in time: ${seen}`)
}

async function run (stack) {
  const url = stack.providerUrl
  const chainId = Number(stack.chainId)
  const rpc = new ethers.providers.JsonRpcProvider(stack.rpcUrl)
  const wallet = new ethers.Wallet(stack.consumerPrivateKey, rpc)
  const dataset = { ...stack.dataset }
  const algorithm = { ...stack.algorithm }
  const report = {}

  report.validProvider = await ProviderInstance.isValidProvider(url)
  const environments = await ProviderInstance.getComputeEnvironments(url)
  report.environments = environments[chainId].map((env) => env.id)
  const environment = environments[chainId][0]
  const validUntil = Math.floor(Date.now() / 1000) + 15 * 60

  const initialize = () => ProviderInstance.initializeCompute(
    [{ documentId: dataset.did, serviceId: dataset.serviceId, transferTxId: dataset.transferTxId }],
    { documentId: algorithm.did, serviceId: algorithm.serviceId, transferTxId: algorithm.transferTxId },
    environment.id, validUntil, url, wallet.address)

  // Job 1: initializeCompute -> orders -> start -> status until done -> result.
  report.initialize = await initialize()
  report.orders = await pay(wallet, chainId, report.initialize, [dataset, algorithm])
  const started = await ProviderInstance.computeStart(
    url, wallet, environment.id, computeAsset(dataset), computeAsset(algorithm))
  report.start = started[0]
  const jobId = report.start.jobId
  const finished = await untilTerminal(url, wallet.address, jobId, dataset.did)
  report.status = finished.status
  report.statusesSeen = finished.seen
  const output = finished.status.results.find((result) => result.type === 'output')
  const resultUrl = await ProviderInstance.getComputeResultUrl(url, wallet, jobId, output.index)
  const downloaded = await fetch(resultUrl)
  report.resultStatus = downloaded.status
  report.result = await downloaded.text()

  // Job 2: the orders are used, so initializeCompute offers reuseOrder; started, stopped, deleted.
  report.initializeAgain = await initialize()
  report.ordersAgain = await pay(wallet, chainId, report.initializeAgain, [dataset, algorithm])
  const second = (await ProviderInstance.computeStart(
    url, wallet, environment.id, computeAsset(dataset), computeAsset(algorithm)))[0]
  report.stop = await ProviderInstance.computeStop(dataset.did, wallet.address, second.jobId, url, wallet)
  report.statusAfterStop = (await untilTerminal(url, wallet.address, second.jobId, dataset.did)).status
  report.delete = await ProviderInstance.computeDelete(dataset.did, wallet, second.jobId, url)
  return report
}

async function main () {
  const [stackPath, reportPath] = process.argv.slice(2)
  const report = await run(JSON.parse(fs.readFileSync(stackPath, 'utf8')))
  fs.writeFileSync(reportPath, JSON.stringify(report, null, 1))
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error)
  process.exit(1)
})
