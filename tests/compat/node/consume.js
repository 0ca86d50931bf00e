'use strict'
/**
 * Read records with kafkajs from chosen partitions, starting at a chosen position (assign + seek).
 *
 *   node consume.js BOOTSTRAP TOPIC --partitions 0,1 --start earliest|latest|offset:N|timestamp:MS
 *                   --count N|stdin [--timeout-ms 15000] [--max-wait-ms 500]
 *
 * Prints {"event": "positioned", "positions": {partition: offset}} once the start is resolved. With
 * "--count stdin" it then waits for the count on stdin, so a test can produce after that line and
 * check that a reader at "latest" gets exactly the new records. Then it prints the result:
 * {"ok": true, "records": [...], "positions": {...}, "start": {...}, "elapsedMs": ms spent reading}.
 * Stops as soon as N records have arrived; returns what it has when the timeout passes.
 */
const { cluster, seek, readPartitions, emit, run, options, readStdin } = require('./lib')

function parseStart(text) {
  if (text === 'earliest' || text === 'latest') return text
  const [kind, value] = text.split(':')
  if (kind === 'offset') return { offset: Number(value) }
  if (kind === 'timestamp') return { timestamp: Number(value) }
  throw new Error(`bad --start ${text}`)
}

run(async args => {
  const [bootstrap, topic] = args
  const opts = options(args.slice(2))
  const partitions = (opts.partitions || '0').split(',').map(Number)
  const c = cluster(bootstrap)
  await c.connect()
  try {
    await c.addTargetTopic(topic)
    const positions = await seek(c, topic, partitions, parseStart(opts.start || 'earliest'))
    emit({ event: 'positioned', positions })
    const count = opts.count === 'stdin' ? Number((await readStdin()).trim()) : Number(opts.count || 1)
    const started = Date.now()
    const result = await readPartitions(c, topic, positions, {
      count,
      timeoutMs: Number(opts['timeout-ms'] || 15000),
      maxWaitMs: Number(opts['max-wait-ms'] || 500),
    })
    return { ...result, start: positions, elapsedMs: Date.now() - started }
  } finally {
    await c.disconnect()
  }
})
