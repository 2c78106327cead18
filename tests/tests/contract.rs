//! The port contract suite, instantiated once per backend.
//!
//! Every case is written once in `flowgate_tests::contract` as a generic async function over a
//! port trait object; the macros below give each case a test per backend, named
//! `contract::<backend>::<port>::<case>` (for example `contract::moto::run_store::put_conflict`),
//! so `cargo nextest run -E 'test(/contract::moto::/)'` selects one backend.
//!
//! - `embedded`: redb in a fresh temp dir + the in-process queue.
//! - `memory`: the same store on redb's in-memory backend (the seeded simulation's store).
//! - `moto`: DynamoDB + SQS over the wire on the moto server `scripts/test` starts (fails with
//!   instructions when `AWS_ENDPOINT_URL` is not set); with the `localstack` feature and
//!   `FLOWGATE_CONTRACT_BACKEND=localstack`, on LocalStack in a container instead.

/// One test per case: build the backend, run the case against one of its ports.
macro_rules! cases {
    ($backend:ident, $port:ident, $field:ident, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = flowgate_tests::contract::$backend().await;
                flowgate_tests::contract::$port::$case(&*backend.$field).await;
            }
        )*
    };
}

/// The whole suite for one backend. Add a case here once and every backend runs it.
macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            mod run_store {
                cases!(
                    $backend,
                    run_store,
                    runs,
                    [
                        round_trip,
                        create_if_absent,
                        idempotency_key,
                        put_conflict,
                        put_version_convention,
                        concurrent_puts,
                        audit_atomic_with_put,
                        audit_order,
                        list_filters_and_sorts,
                        pagination,
                        large_listing,
                        page_size_limits,
                        bad_cursor,
                        due_runs,
                        sessions,
                    ]
                );
            }
            mod workflow_store {
                cases!(
                    $backend,
                    workflow_store,
                    workflows,
                    [versions, concurrent_puts, delete, list,]
                );
            }
            mod record_store {
                cases!(
                    $backend,
                    record_store,
                    records,
                    [
                        round_trip,
                        create_if_absent,
                        put_replaces,
                        list_order_and_paging,
                        page_size_limits,
                        collections_isolated,
                        delete,
                        expired_not_returned,
                        concurrent_create,
                        invalid_keys,
                    ]
                );
            }
            mod queue {
                cases!(
                    $backend,
                    queue,
                    queue,
                    [
                        send_receive_ack,
                        receive_wakes_on_send,
                        delay_respected,
                        batch_of_25,
                        unacked_redelivered,
                        hand_back,
                        ack_removes,
                        delay_limit,
                    ]
                );
            }
        }
    };
}

mod contract {
    suite!(embedded);
    suite!(memory);
    suite!(moto);
}
