'use strict'
/**
 * kafkajs admin.deleteTopicRecords: delete partition 0 of TOPIC below OFFSET, then report the
 * watermarks and the first offset a read from the earliest position returns.
 *
 *   node delete_records.js BOOTSTRAP TOPIC OFFSET
 *
 * Result: {"ok": true, "before": [{partition, low, high}], "after": [...], "firstOffsetAfter": n | null}.
 */
const { kafka, cluster, seek, readPartitions, run } = require('./lib')

const watermarks = async (admin, topic) =>
  (await admin.fetchTopicOffsets(topic)).map(p => ({ partition: p.partition, low: Number(p.low), high: Number(p.high) }))

run(async ([bootstrap, topic, offset]) => {
  const admin = kafka(bootstrap).admin()
  await admin.connect()
  let before, after
  try {
    before = await watermarks(admin, topic)
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: String(offset) }] })
    after = await watermarks(admin, topic)
  } finally {
    await admin.disconnect()
  }
  const c = cluster(bootstrap)
  await c.connect()
  try {
    await c.addTargetTopic(topic)
    const start = await seek(c, topic, [0], 'earliest')
    const { records } = await readPartitions(c, topic, start, { count: 1, timeoutMs: 10000 })
    return { before, after, earliest: start[0], firstOffsetAfter: records.length ? records[0].offset : null }
  } finally {
    await c.disconnect()
  }
})
