'use strict'
/**
 * Shared pieces of the kafkajs scenario scripts run by tests/compat/test_kafkajs.py.
 *
 * Every script prints JSON lines on stdout; the last one is the result ({"ok": true, ...} or
 * {"ok": false, "error": ...} with exit code 1). kafkajs logs go to stderr as JSON lines.
 *
 * Records cross the process boundary as JSON with keys, values and header values in base64
 * (null stays null), so binary data, empty values and tombstones survive unchanged.
 *
 * Compression: kafkajs 2.2.4 ships only GZIP. Snappy comes from the kafkajs-snappy package (pure
 * JavaScript, handles the xerial framing of Java clients); LZ4 and ZSTD are registered here as small
 * codecs over lz4js (LZ4 frame format, pure JavaScript) and zstd-codec (zstd compiled to JavaScript).
 *
 * Consuming: kafkajs 2.2.4 has no assign(); its consumer always joins a group. Until Moldau has
 * consumer groups, `readPartitions` does what that consumer does underneath, with kafkajs's own
 * classes: ListOffsets through Cluster.fetchTopicsOffset to seek (earliest, latest, by timestamp),
 * then Fetch (v11) through Broker.fetch, decoding batches with kafkajs's record decoder and codecs.
 */

const { Kafka, CompressionTypes, CompressionCodecs, Partitioners, logLevel } = require('kafkajs')
const Cluster = require('kafkajs/src/cluster')
const { createLogger } = require('kafkajs/src/loggers')
const defaultSocketFactory = require('kafkajs/src/network/socketFactory')

const CLIENT_ID = 'moldau-compat-kafkajs'
const READ_COMMITTED = 1

function stderrLogCreator() {
  return ({ namespace, label, log }) => {
    process.stderr.write(JSON.stringify({ level: label, namespace, ...log }) + '\n')
  }
}

let zstdModule = null
function zstd() {
  if (zstdModule === null) {
    const { ZstdCodec } = require('zstd-codec')
    zstdModule = new Promise(resolve => ZstdCodec.run(resolve))
  }
  return zstdModule
}

function registerCodecs() {
  CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy')
  CompressionCodecs[CompressionTypes.LZ4] = () => ({
    async compress(encoder) {
      return Buffer.from(require('lz4js').compress(encoder.buffer))
    },
    async decompress(buffer) {
      return Buffer.from(require('lz4js').decompress(buffer))
    },
  })
  CompressionCodecs[CompressionTypes.ZSTD] = () => ({
    async compress(encoder) {
      const z = await zstd()
      return Buffer.from(new z.Simple().compress(encoder.buffer))
    },
    async decompress(buffer) {
      // The streaming decoder also reads frames that do not carry their content size.
      const z = await zstd()
      const out = new z.Streaming().decompress(buffer)
      if (!out) throw new Error('zstd-codec could not decompress the batch')
      return Buffer.from(out)
    },
  })
}
registerCodecs()

const COMPRESSION = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}

/**
 * ssl/sasl client options from MOLDAU_KAFKAJS_SECURITY (set by the Python test helper), with a CA given
 * as a file path read here: {"ssl": {"ca": "/path/ca.pem"}, "sasl": {"mechanism": "plain", ...}}.
 */
function securityOptions() {
  const text = process.env.MOLDAU_KAFKAJS_SECURITY
  if (!text) return {}
  const security = JSON.parse(text)
  if (security.ssl && security.ssl.ca) {
    const fs = require('fs')
    security.ssl = { ...security.ssl, ca: [fs.readFileSync(security.ssl.ca, 'utf8')] }
    for (const key of ['cert', 'key']) {
      if (security.ssl[key]) security.ssl[key] = fs.readFileSync(security.ssl[key], 'utf8')
    }
  }
  return security
}

function kafka(bootstrap) {
  return new Kafka({
    clientId: CLIENT_ID,
    brokers: [bootstrap],
    connectionTimeout: 3000,
    requestTimeout: 10000,
    retry: { retries: 3, initialRetryTime: 100 },
    logLevel: logLevel.WARN,
    logCreator: stderrLogCreator,
    ...securityOptions(),
  })
}

function producer(client) {
  return client.producer({ createPartitioner: Partitioners.LegacyPartitioner, allowAutoTopicCreation: true })
}

/** A kafkajs Cluster like the one inside its consumer (READ_COMMITTED, as the consumer's default). */
function cluster(bootstrap) {
  return new Cluster({
    logger: createLogger({ level: logLevel.WARN, logCreator: stderrLogCreator }),
    socketFactory: defaultSocketFactory(),
    brokers: [bootstrap],
    clientId: CLIENT_ID,
    ...securityOptions(),
    connectionTimeout: 3000,
    requestTimeout: 10000,
    enforceRequestTimeout: true,
    metadataMaxAge: 300000,
    retry: { retries: 3, initialRetryTime: 100 },
    allowAutoTopicCreation: true,
    isolationLevel: READ_COMMITTED,
  })
}

const b64 = buf => (buf === null || buf === undefined ? null : Buffer.from(buf).toString('base64'))
const unb64 = s => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))

/** {key, value, headers: [[name, b64]], timestamp, partition} -> a kafkajs message. */
function toKafkajsMessage(m) {
  const headers = {}
  for (const [name, value] of m.headers || []) {
    const v = unb64(value)
    if (headers[name] === undefined) headers[name] = v
    else headers[name] = [].concat(headers[name], [v])
  }
  const out = { key: unb64(m.key), value: unb64(m.value), headers }
  if (m.partition !== undefined && m.partition !== null) out.partition = m.partition
  if (m.timestamp !== undefined && m.timestamp !== null) out.timestamp = String(m.timestamp)
  return out
}

/** A record decoded by kafkajs -> the JSON shape the Python side compares. */
function fromKafkajsRecord(partition, r) {
  const headers = []
  for (const [name, value] of Object.entries(r.headers || {})) {
    for (const v of Array.isArray(value) ? value : [value]) headers.push([name, b64(v)])
  }
  return {
    partition,
    offset: Number(r.offset),
    key: b64(r.key),
    value: b64(r.value),
    headers,
    timestamp: Number(r.timestamp),
  }
}

/**
 * Seek each partition of `topic`: start is "earliest", "latest", {offset: n} or {timestamp: ms}.
 * Returns {partition: offset}; a timestamp past the last record resolves to the log end offset (Kafka
 * answers -1 to ListOffsets, and kafkajs's consumer then starts at the end).
 */
async function seek(c, topic, partitions, start) {
  if (start && typeof start === 'object' && start.offset !== undefined) {
    return Object.fromEntries(partitions.map(p => [p, Number(start.offset)]))
  }
  const request = { topic, partitions: partitions.map(partition => ({ partition })) }
  if (start && typeof start === 'object' && start.timestamp !== undefined) request.fromTimestamp = start.timestamp
  else request.fromBeginning = start === 'earliest'
  const [result] = await c.fetchTopicsOffset([request])
  const positions = Object.fromEntries(result.partitions.map(p => [p.partition, Number(p.offset)]))
  if (request.fromTimestamp !== undefined && partitions.some(p => positions[p] < 0)) {
    const ends = await seek(c, topic, partitions.filter(p => positions[p] < 0), 'latest')
    Object.assign(positions, ends)
  }
  return positions
}

/**
 * Fetch from `positions` until `count` records have arrived or `timeoutMs` has passed; returns the
 * records in arrival order and the next positions. Fetch long-polls up to `maxWaitMs` per request.
 */
async function readPartitions(c, topic, positions, { count, timeoutMs, maxWaitMs = 500 }) {
  const records = []
  const deadline = Date.now() + timeoutMs
  const pos = { ...positions }
  while (records.length < count && Date.now() < deadline) {
    await c.refreshMetadataIfNecessary()
    const byLeader = c.findLeaderForPartitions(topic, Object.keys(pos))
    if (Object.keys(byLeader).length === 0) {
      // No leader known yet (metadata still settling): ask again shortly instead of spinning.
      await new Promise(resolve => setTimeout(resolve, 100))
      await c.refreshMetadata()
      continue
    }
    for (const [nodeId, partitions] of Object.entries(byLeader)) {
      const broker = await c.findBroker({ nodeId })
      const wait = Math.max(0, Math.min(maxWaitMs, deadline - Date.now()))
      const response = await broker.fetch({
        replicaId: -1,
        isolationLevel: READ_COMMITTED,
        maxWaitTime: wait,
        minBytes: 1,
        maxBytes: 52428800,
        topics: [{
          topic,
          partitions: partitions.map(p => ({ partition: p, fetchOffset: String(pos[p]), maxBytes: 1048576 })),
        }],
      })
      for (const topicResponse of response.responses) {
        for (const part of topicResponse.partitions) {
          if (part.errorCode !== 0) {
            throw new Error(`Fetch ${topic}[${part.partition}] at ${pos[part.partition]}: error code ${part.errorCode}`)
          }
          for (const r of part.messages) {
            // Whole batches come back: skip records before the fetch offset, and control records.
            if (Number(r.offset) < pos[part.partition] || r.isControlRecord) continue
            records.push(fromKafkajsRecord(part.partition, r))
            pos[part.partition] = Number(r.offset) + 1
          }
        }
      }
    }
  }
  return { records, positions: pos }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** Run `main(args)`; print its result as the last JSON line, or {"ok": false, "error"} and exit 1. */
function run(main) {
  const watchdog = setTimeout(() => {
    emit({ ok: false, error: 'scenario watchdog fired (60 s)' })
    process.exit(2)
  }, Number(process.env.SCENARIO_WATCHDOG_MS || 60000))
  main(process.argv.slice(2))
    .then(result => {
      emit({ ok: true, ...result })
      clearTimeout(watchdog)
      process.exit(0)
    })
    .catch(err => {
      emit({ ok: false, error: String((err && err.stack) || err), name: err && err.name, type: err && err.type })
      clearTimeout(watchdog)
      process.exit(1)
    })
}

/** Parse "--name value" pairs after the positional arguments. */
function options(args) {
  const out = {}
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith('--')) {
      out[args[i].slice(2)] = args[i + 1]
      i++
    }
  }
  return out
}

async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}

module.exports = {
  COMPRESSION,
  kafka,
  producer,
  cluster,
  toKafkajsMessage,
  seek,
  readPartitions,
  emit,
  run,
  options,
  readStdin,
  b64,
  unb64,
}
