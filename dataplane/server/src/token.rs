//! The tag a worker gives each ring operation: what the operation is, which socket of which
//! connection it belongs to. Layout: op (4 bits) | side (1 bit) | slot index (32 bits) |
//! generation (24 bits), so a completion finds its connection with one slab lookup and a stale
//! one (the slot has a new tenant) is recognised by its generation.

use crate::slab::{Key, GEN_MASK};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A fresh connection handed between workers (`[engine] balance`): `Side::Client` on the
    /// receiving worker, `Side::Origin` for the sender's outcome; the key's `idx` is the
    /// listener, its `gen` the target worker.
    Handoff = 0,
    Tick = 1,
    Accept,
    Recv,
    Send,
    Connect,
    Close,
    Cancel,
    /// The control plane's wake-up (an eventfd readable: news for this worker).
    Control,
    /// A splicing socket is readable (its one-shot poll; the worker splices what is there).
    Readable,
    /// A socket is writable for bytes waiting in a pipe (the poll holds their piped TxBuf).
    Writable,
    /// A connect racing the origin's own, to the next origin of its pool.
    RaceConnect,
    /// A one-shot wake-up for a connection deadline due before the next tick (a connect race,
    /// say); never cancelled.
    Wake,
    /// A health check's connect or poll (`Side::Client`) or deadline (`Side::Origin`); the
    /// key names the check, not a connection.
    Check,
    /// A warm origin connection's connect; the key names its slot in the worker's warm set.
    WarmConnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Origin,
}

pub fn tag(op: Op, side: Side, key: Key) -> u64 {
    ((op as u64) << 60)
        | ((side as u64) << 59)
        | ((key.idx as u64) << 24)
        | (key.gen & GEN_MASK) as u64
}

pub fn untag(t: u64) -> (Op, Side, Key) {
    let op = match t >> 60 {
        0 => Op::Handoff,
        1 => Op::Tick,
        2 => Op::Accept,
        3 => Op::Recv,
        4 => Op::Send,
        5 => Op::Connect,
        6 => Op::Close,
        8 => Op::Control,
        9 => Op::Readable,
        10 => Op::Writable,
        11 => Op::RaceConnect,
        12 => Op::Wake,
        13 => Op::Check,
        14 => Op::WarmConnect,
        _ => Op::Cancel,
    };
    let side = if (t >> 59) & 1 == 1 {
        Side::Origin
    } else {
        Side::Client
    };
    let key = Key {
        idx: ((t >> 24) & 0xFFFF_FFFF) as u32,
        gen: (t & GEN_MASK as u64) as u32,
    };
    (op, side, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for op in [
            Op::Handoff,
            Op::Tick,
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Connect,
            Op::Close,
            Op::Cancel,
            Op::Control,
            Op::Readable,
            Op::Writable,
            Op::RaceConnect,
            Op::Wake,
            Op::Check,
            Op::WarmConnect,
        ] {
            for side in [Side::Client, Side::Origin] {
                let key = Key {
                    idx: 0xFFFF_FFFF,
                    gen: 0xAB_CDEF,
                };
                assert_eq!(untag(tag(op, side, key)), (op, side, key));
            }
        }
    }
}
