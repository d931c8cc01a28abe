//! GruWs: an Engine.IO session on the WebSocket transport, either opened directly
//! (`transport=websocket` without a sid) or upgraded from a polling session: the client probes
//! (`2probe` → `3probe`), the polling session answers its GETs with `noop`, the client sends `5`, and
//! the socket with its waiting packets moves here. Messages are delivered through the shared bounded
//! WebSocket outbox ([`crate::transport::delivery`]).

use std::sync::Arc;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};

use super::engineio::{self, Packet};
use super::polling::{Forward, GruPoll, Handover, Pause, TakenOver};
use super::socket::{self, GruSocket, GruTransport};
use super::GruState;
use crate::core::Deliver;
use crate::domain::message::{ConnId, Message};
use crate::transport::delivery::{self, WsDelivery, WsFrontend};

/// Messages kept for a socket while its upgrade completes, and their size.
#[derive(Default)]
struct Held {
    msgs: Vec<Deliver>,
    bytes: usize,
}

enum Mode {
    /// Serving the socket.
    Active,
    /// Taking over the socket of a polling session; messages meanwhile wait in `held`.
    Upgrading { poll: Addr<GruPoll>, probed: bool, held: Held },
    /// Handover requested, waiting for the polling session's answer.
    TakingOver { held: Held },
}

pub struct GruWs {
    gru: Arc<GruState>,
    sock: GruSocket,
    mode: Mode,
    delivery: WsDelivery,
}

impl GruWs {
    /// A session opened on the WebSocket itself.
    pub fn direct(gru: Arc<GruState>, sock: GruSocket) -> GruWs {
        let delivery =
            WsDelivery::new(sock.conn, gru.queue_bytes as u64, gru.metrics.clone(), "gru").unconfirmed();
        GruWs { gru, sock, mode: Mode::Active, delivery }
    }

    /// The WebSocket of an upgrade of the polling session `poll` (connection `conn`).
    pub fn upgrade(gru: Arc<GruState>, sock: GruSocket, poll: Addr<GruPoll>) -> GruWs {
        let delivery =
            WsDelivery::new(sock.conn, gru.queue_bytes as u64, gru.metrics.clone(), "gru").unconfirmed();
        GruWs { gru, sock, mode: Mode::Upgrading { poll, probed: false, held: Held::default() }, delivery }
    }

    pub fn plumbing(&self) -> crate::transport::ws::Plumbing {
        self.delivery.plumbing()
    }

    pub fn conn(&self) -> ConnId {
        self.sock.conn
    }

    /// A text frame while the upgrade is under way: the probe, then the upgrade packet.
    fn on_upgrade_frame(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let Mode::Upgrading { poll, probed, .. } = &mut self.mode else { return };
        match engineio::decode(text) {
            Ok(Packet::Ping(p)) if p == "probe" => {
                *probed = true;
                poll.do_send(Pause(true));
                delivery::text(self, ctx, engineio::encode(&Packet::Pong("probe".into())));
            }
            Ok(Packet::Upgrade) if *probed => self.take_over(ctx),
            _ => {
                log::info!("gru {}: unexpected packet during upgrade, closing", self.sock.sid);
                ctx.stop();
            }
        }
    }

    /// Points the rooms at this actor, then takes the socket and its waiting packets from the polling
    /// session (whose mailbox holds every message sent to it before the rooms moved).
    fn take_over(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Mode::Upgrading { poll, held, .. } = std::mem::replace(&mut self.mode, Mode::Active) else {
            return;
        };
        self.mode = Mode::TakingOver { held };
        let core = self.gru.core.clone();
        let conn = self.sock.conn;
        let deliver = ctx.address().recipient();
        let forward = ctx.address().recipient();
        let fut = async move {
            core.repoint_rooms(conn, deliver).await;
            poll.send(Handover { forward }).await.ok().flatten()
        };
        ctx.wait(fut.into_actor(self).map(|taken, act, ctx| {
            let Some(TakenOver { sock, queued, closing }) = taken else {
                log::info!("gru {}: the polling session is gone, closing", act.sock.sid);
                ctx.stop();
                return;
            };
            let Mode::TakingOver { held } = std::mem::replace(&mut act.mode, Mode::Active) else { return };
            act.sock = sock;
            if act.sock.user.is_none() {
                socket::require_auth_in_time(act, ctx);
            }
            for packet in queued {
                act.send_packet(ctx, packet);
            }
            if closing {
                act.end(ctx);
                return;
            }
            for d in held.msgs {
                delivery::deliver(act, d, ctx);
            }
        }));
    }
}

impl WsFrontend for GruWs {
    fn delivery(&mut self) -> &mut WsDelivery {
        &mut self.delivery
    }

    const SAME_FRAME_FOR_ALL: bool = true;

    fn render(&self, msg: &Message) -> Option<bytestring::ByteString> {
        Some(socket::msg_packet(msg))
    }
}

impl GruTransport for GruWs {
    fn gru(&self) -> &Arc<GruState> {
        &self.gru
    }

    fn serving(&self) -> bool {
        matches!(self.mode, Mode::Active)
    }

    fn socket(&mut self) -> &mut GruSocket {
        &mut self.sock
    }

    fn send_packet(&mut self, ctx: &mut ws::WebsocketContext<Self>, packet: String) {
        delivery::text(self, ctx, packet);
    }

    fn end(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.close(Some(CloseReason { code: CloseCode::Normal, description: None }));
        ctx.stop();
    }

    fn inflow_add(&mut self, size: u64) {
        self.delivery.inflow_add(size);
    }

    fn inflow_done(&mut self, ctx: &mut ws::WebsocketContext<Self>, size: u64) {
        self.delivery.inflow_done(size);
        while let Some(text) = self.delivery.next_held() {
            socket::on_packet(self, ctx, &text);
        }
    }
}

impl Actor for GruWs {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.delivery.metrics.connections.inc();
        if matches!(self.mode, Mode::Active) {
            for packet in socket::greeting(&self.gru, &mut self.sock, false) {
                delivery::text(self, ctx, packet);
            }
        }
        if matches!(self.mode, Mode::Active) {
            socket::require_auth_in_time(self, ctx);
        } else {
            // An upgrade that does not complete in this time is given up.
            ctx.run_later(self.gru.auth_timeout, |act, ctx| {
                if !matches!(act.mode, Mode::Active) {
                    ctx.stop();
                }
            });
        }
        ctx.run_interval(self.gru.ping_interval, |act, ctx| {
            if matches!(act.mode, Mode::Active) {
                socket::ping(act, ctx);
            }
        });
        ctx.run_interval(socket::liveness_tick(&self.gru), |act, ctx| {
            if socket::timed_out(&act.gru, &act.sock) {
                log::debug!("gru {}: websocket session timed out", act.sock.sid);
                ctx.stop();
            } else {
                delivery::pump(act, ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.delivery.metrics.connections.dec();
        match &self.mode {
            Mode::Active => socket::leave(&self.gru, &mut self.sock),
            // The probe failed: the client goes on polling.
            Mode::Upgrading { poll, .. } => poll.do_send(Pause(false)),
            Mode::TakingOver { .. } => {}
        }
    }
}

impl Handler<Deliver> for GruWs {
    type Result = ();

    fn handle(&mut self, d: Deliver, ctx: &mut Self::Context) {
        match &mut self.mode {
            Mode::Active => delivery::deliver(self, d, ctx),
            Mode::Upgrading { held, .. } | Mode::TakingOver { held } => {
                held.bytes += d.msg.payload.len() + d.msg.extension.len() + 64;
                if held.bytes > self.gru.queue_bytes {
                    log::info!(
                        "gru {}: upgrade not completing while messages pile up, closing",
                        self.sock.sid
                    );
                    self.gru.metrics.slow_dropped.inc();
                    self.delivery.meter.abort();
                    ctx.stop();
                    return;
                }
                held.msgs.push(d);
            }
        }
    }
}

impl Handler<Forward> for GruWs {
    type Result = ();

    fn handle(&mut self, f: Forward, ctx: &mut Self::Context) {
        self.send_packet(ctx, f.0);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for GruWs {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        match delivery::control(self, item, ctx) {
            Some(ws::Message::Text(text)) => match self.mode {
                Mode::Active => {
                    if !self.delivery.hold(&text) {
                        socket::on_packet(self, ctx, &text);
                    }
                }
                Mode::Upgrading { .. } => self.on_upgrade_frame(&text, ctx),
                Mode::TakingOver { .. } => {
                    log::info!("gru {}: packet before the upgrade completed, closing", self.sock.sid);
                    ctx.stop();
                }
            },
            Some(_) => {
                // Binary attachments are not supported.
                ctx.close(Some(CloseReason {
                    code: CloseCode::Unsupported,
                    description: Some("binary packets are not supported".into()),
                }));
                ctx.stop();
            }
            None => {}
        }
    }
}
