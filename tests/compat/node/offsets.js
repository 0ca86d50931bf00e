'use strict'
/**
 * kafkajs admin offset queries (ListOffsets): earliest/latest per partition, and by timestamp.
 *
 *   node offsets.js BOOTSTRAP TOPIC [--timestamp MS]
 *
 * Result: {"ok": true, "offsets": [{partition, low, high}], "byTimestamp": [{partition, offset}] | null}.
 * kafkajs's fetchTopicOffsetsByTimestamp answers the high watermark where Kafka finds no record at or
 * after the timestamp.
 */
const { kafka, run, options } = require('./lib')

run(async args => {
  const [bootstrap, topic] = args
  const opts = options(args.slice(2))
  const admin = kafka(bootstrap).admin()
  await admin.connect()
  try {
    const offsets = (await admin.fetchTopicOffsets(topic))
      .map(p => ({ partition: p.partition, low: Number(p.low), high: Number(p.high) }))
    let byTimestamp = null
    if (opts.timestamp !== undefined) {
      byTimestamp = (await admin.fetchTopicOffsetsByTimestamp(topic, Number(opts.timestamp)))
        .map(p => ({ partition: p.partition, offset: Number(p.offset) }))
    }
    return { offsets, byTimestamp }
  } finally {
    await admin.disconnect()
  }
})
