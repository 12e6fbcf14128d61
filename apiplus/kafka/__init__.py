"""The Kafka groundwork every worker stands on.

- `KafkaClientConfig` (settings -> client options) and `KafkaClients` (the factory of every client);
- `ClientFactory`, `Consumer`, `Producer`, `TransactionalProducer`, `Record`: what the loops need, as
  protocols the harness's fakes also satisfy; `Output` and `send_outputs` for producing;
- `RebalanceAdapter` + `PartitionOwner`: rebalance callbacks to an owner's public methods;
- `LagExporter`: `kafka_consumergroup_lag`;
- `CompactedReader`, `load_table`: compacted topics read from the beginning.
Retry delays are `apiplus.backoff.Backoff`; dead letters `apiplus.dlq.DeadLetterWriter`.
"""

from apiplus.kafka.clients import KafkaClients
from apiplus.kafka.compacted import CompactedReader, apply_row, load_table
from apiplus.kafka.config import KafkaClientConfig
from apiplus.kafka.lag import LagExporter
from apiplus.kafka.rebalance import PartitionOwner, RebalanceAdapter
from apiplus.kafka.types import (
    ClientFactory,
    Consumer,
    Output,
    Producer,
    Record,
    TransactionalProducer,
    send_outputs,
)

__all__ = [
    "ClientFactory",
    "CompactedReader",
    "Consumer",
    "KafkaClientConfig",
    "KafkaClients",
    "LagExporter",
    "Output",
    "PartitionOwner",
    "Producer",
    "RebalanceAdapter",
    "Record",
    "TransactionalProducer",
    "apply_row",
    "load_table",
    "send_outputs",
]
