//! The netlink layer the ADD fast path relies on, against a real kernel in namespaces of the
//! test's own: batches answered per request and in order, the veth echo (and its queues),
//! and opening a socket in another namespace from the calling thread.

mod common;

use cni_bridge::netlink::link::{self, Link, VethSpec};
use cni_bridge::netlink::{CREATE_EXCL, Netlink, addr};
use cni_bridge::netns::{self, PinnedNetns};
use common::*;

#[test]
fn a_batch_answers_each_request_in_order_and_a_failure_does_not_stop_the_rest() {
    let ns = PinnedNetns::create(&pin_dir(), &unique("nl-batch")).unwrap();
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let lo = link::by_name(&mut nl, "lo").unwrap().unwrap();
        let answers = nl
            .batch(vec![
                (link::get_message(0, Some("nosuchlink0")), 0),
                (link::flags_message(lo.index, true, None), 0),
                (
                    addr::add_message(lo.index, &"10.250.99.1/32".parse().unwrap()),
                    CREATE_EXCL,
                ),
                (
                    addr::add_message(lo.index, &"10.250.99.1/32".parse().unwrap()),
                    CREATE_EXCL,
                ),
                (link::get_message(lo.index, None), 0),
            ])
            .unwrap();
        assert_eq!(answers.len(), 5);
        assert!(answers[0].as_ref().unwrap_err().is_not_found());
        assert!(answers[1].as_ref().unwrap().is_empty(), "an ack, no object");
        assert!(answers[2].is_ok());
        assert!(answers[3].as_ref().unwrap_err().is_exists());
        let back: Vec<Link> = answers[4]
            .as_ref()
            .unwrap()
            .iter()
            .cloned()
            .filter_map(Link::from_answer)
            .collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].name, "lo");
        assert!(back[0].up, "the earlier request of the batch took effect");
        // The socket still answers single requests after a batch.
        assert!(link::by_name(&mut nl, "lo").unwrap().is_some());
    })
    .unwrap();
}

#[test]
fn veth_creation_echoes_the_host_end_with_its_peer_index_and_a_pod_socket_reaches_it() {
    let host = PinnedNetns::create(&pin_dir(), &unique("nl-host")).unwrap();
    let pod = PinnedNetns::create(&pin_dir(), &unique("nl-pod")).unwrap();
    let pod_file = pod.open().unwrap();
    let (echoed, peer) = host
        .run(|| {
            use std::os::fd::AsFd;
            let mut nl = Netlink::open().unwrap();
            let echoed = link::create_veth(
                &mut nl,
                &VethSpec {
                    host_name: "vethnltest0",
                    peer_name: "eth0",
                    peer_netns: pod_file.as_fd(),
                    master: None,
                    mtu: Some(1400),
                    peer_mac: None,
                },
            )
            .unwrap();
            let read = link::by_name(&mut nl, "vethnltest0").unwrap().unwrap();
            assert!(!read.up, "created down when it joins no bridge");
            // This thread opens a socket inside the pod's namespace and comes back.
            let mut pod_nl = netns::with_thread_in(&pod_file, Netlink::open)
                .unwrap()
                .unwrap();
            assert!(
                link::by_name(&mut nl, "vethnltest0").unwrap().is_some(),
                "the thread is back in the host namespace"
            );
            let peer = link::by_name(&mut pod_nl, "eth0").unwrap().unwrap();
            (echoed, peer)
        })
        .unwrap();
    // Linux 6.3 and later echo the new link; older kernels answer with a bare ack.
    if let Some(h) = echoed {
        assert_eq!(h.name, "vethnltest0");
        assert_eq!(h.mtu, 1400);
        assert_eq!(h.mac.len(), 6);
        if let Some(link) = h.link {
            assert_eq!(link, peer.index, "IFLA_LINK is the peer's index in the pod");
        }
    }
    assert_eq!(peer.mtu, 1400);
    // One queue each way on both ends, whatever the number of CPUs.
    for (ns, name) in [(host.path(), "vethnltest0"), (pod.path(), "eth0")] {
        let l = link_in(ns, name).unwrap();
        assert_eq!(
            (&l["num_tx_queues"], &l["num_rx_queues"]),
            (&1.into(), &1.into()),
            "{name}"
        );
    }
}
