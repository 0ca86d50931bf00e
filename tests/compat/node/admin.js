'use strict'
/**
 * kafkajs admin scenario on one new topic, each step's answer reported for the Python test to check.
 *
 *   node admin.js BOOTSTRAP TOPIC
 *
 * Steps: createTopics (2 partitions, retention.ms=3600000) -> createTopics again (kafkajs answers false
 * for TOPIC_ALREADY_EXISTS) -> listTopics -> fetchTopicMetadata -> describeConfigs -> alterConfigs
 * (retention.ms=7200000) -> describeConfigs -> createPartitions (to 4) -> fetchTopicMetadata ->
 * describeCluster -> deleteTopics -> listTopics.
 */
const { ConfigResourceTypes } = require('kafkajs')
const { kafka, run } = require('./lib')

function configMap(described) {
  const out = {}
  for (const resource of described.resources) {
    if (resource.errorCode !== 0) throw new Error(`describeConfigs ${resource.resourceName}: ${resource.errorCode}`)
    for (const e of resource.configEntries) out[e.configName] = { value: e.configValue, isDefault: e.isDefault }
  }
  return out
}

run(async ([bootstrap, topic]) => {
  const admin = kafka(bootstrap).admin()
  await admin.connect()
  const steps = {}
  const resource = { type: ConfigResourceTypes.TOPIC, name: topic }
  try {
    steps.created = await admin.createTopics({
      topics: [{ topic, numPartitions: 2, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
      waitForLeaders: true,
    })
    steps.createdAgain = await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: false })
    steps.listedAfterCreate = (await admin.listTopics()).includes(topic)
    const meta = await admin.fetchTopicMetadata({ topics: [topic] })
    steps.partitionsAfterCreate = meta.topics[0].partitions.map(p => ({ partitionId: p.partitionId, leader: p.leader, replicas: p.replicas }))
    steps.configsAfterCreate = configMap(await admin.describeConfigs({ resources: [resource], includeSynonyms: false }))
    const altered = await admin.alterConfigs({
      validateOnly: false,
      resources: [{ ...resource, configEntries: [{ name: 'retention.ms', value: '7200000' }] }],
    })
    steps.alterErrors = altered.resources.map(r => r.errorCode)
    steps.configsAfterAlter = configMap(await admin.describeConfigs({
      resources: [{ ...resource, configNames: ['retention.ms', 'cleanup.policy'] }],
      includeSynonyms: false,
    }))
    await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] })
    const meta2 = await admin.fetchTopicMetadata({ topics: [topic] })
    steps.partitionIdsAfterCreatePartitions = meta2.topics[0].partitions.map(p => p.partitionId).sort((a, b) => a - b)
    const described = await admin.describeCluster()
    steps.cluster = { brokers: described.brokers, controller: described.controller, clusterId: described.clusterId }
    await admin.deleteTopics({ topics: [topic], timeout: 5000 })
    steps.listedAfterDelete = (await admin.listTopics()).includes(topic)
  } finally {
    await admin.disconnect()
  }
  return { steps }
})
