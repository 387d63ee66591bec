//! The table of configuration keys: each key is declared here once, with
//! its field and type in [`super::Config`], its default, its kind of value
//! ([`super::kinds`]), its environment variables, and its flag's argument
//! name and help. `config_keys!(m)` hands the whole table to the macro `m`,
//! which is how [`super::Config`], [`super::KEYS`], the layered resolution,
//! the effective configuration and the command line's flags
//! ([`crate::cli`]) are all made from it; the flag of key `a_b` is `--a-b`.
//!
//! Adding a key is one entry here (plus a kind in [`super::kinds`] if no
//! existing one fits), a row in README's configuration table (a test checks
//! that every key has one), and a line in a precedence test.
//!
//! Row syntax:
//! `key => field: Type = default, kind, env [VARS], flag "ARG" [FlagType] "help" live|restart;`
//! where `live` marks a key a reload (`SIGHUP`) applies to a running relay
//! and `restart` one that takes effect only at start; `default` is
//! `Some(value)`, or `None` for a required key, and
//! `[FlagType]` is `[Option<String>]`, or `[Vec<String>]` for a flag that repeats
//! (written out, not a type macro, because argh tells options by their type's tokens).

/// Hands the table of keys to the macro named by the caller.
macro_rules! config_keys {
    ($then:ident) => {
        $then! {
            /// Addresses miners connect to (port 0: any free port).
            listen => listen: Vec<SocketAddr> = Some(vec![DEFAULT_LISTEN]), ListenList,
                env ["LISTEN_HOST", "LISTEN_PORT"],
                flag "ADDR" [Vec<String>] "address miners connect to (default 0.0.0.0:3333; port 0 = any free); repeat for several" restart;
            /// The pool and its backups in order (empty when `pools` is used);
            /// resolved per connection by the relay.
            pool => pool: Vec<PoolAddr> = Some(Vec::new()), Pool,
                env ["POOL_HOST", "POOL_PORT"],
                flag "HOST:PORT" [Vec<String>] "the pool to relay to, HOST:PORT; repeat for backups in order (this, pools, or POOL_HOST/POOL_PORT is required)" live;
            /// Pools with names, priorities and weights (empty when `pool` is used).
            pools => pools: Vec<PoolSpec> = Some(Vec::new()), PoolList,
                env ["POOLS"],
                flag "JSON" [Option<String>] "pools as JSON: [{\"name\":..,\"address\":\"HOST:PORT\",\"priority\":0,\"weight\":1},..] (usually in the file)" live;
            /// Where miners go by listen address or source network.
            routes => routes: Vec<Route> = Some(Vec::new()), RouteList,
                env ["ROUTES"],
                flag "JSON" [Option<String>] "routes as JSON: [{\"listen\":\"IP:PORT\",\"source\":\"CIDR\",\"pools\":[NAME,..]},..] (usually in the file)" live;
            /// Address of the HTTP server (port 0: any free port).
            metrics_listen => metrics_listen: SocketAddr = Some(DEFAULT_METRICS_LISTEN), Listen,
                env ["METRICS_HOST", "METRICS_PORT"],
                flag "ADDR" [Option<String>] "address of the HTTP server for /metrics /healthz /status (default 0.0.0.0:9100)" restart;
            /// Most verbose level logged.
            log_level => log_level: LevelFilter = Some(DEFAULT_LOG_LEVEL),
                Choice::new(&kinds::LEVELS, kinds::level_str),
                env ["LOG_LEVEL"],
                flag "LEVEL" [Option<String>] "off, error, warn, info (default), debug or trace" restart;
            /// Log line format; `Auto` is decided by [`LogFormat::resolve`].
            log_format => log_format: LogFormat = Some(DEFAULT_LOG_FORMAT),
                Choice::new(&LogFormat::ALL, kinds::format_str),
                env ["LOG_FORMAT"],
                flag "FORMAT" [Option<String>] "auto (default: journald under systemd, else text), text, journald or json" restart;
            /// Miner connections open at once; more are refused.
            max_connections => max_connections: usize = Some(DEFAULT_MAX_CONNECTIONS),
                Count::<usize>::new(1, MAX_MAX_CONNECTIONS as u64),
                env ["MAX_CONNECTIONS"],
                flag "N" [Option<String>] "miner connections open at once (default 10000)" live;
            /// Token-bucket refill rate for accepting connections, per second.
            accept_rate_per_second => accept_rate_per_second: f64 = Some(DEFAULT_ACCEPT_RATE_PER_SECOND),
                Rate { max: MAX_ACCEPT_RATE_PER_SECOND },
                env ["ACCEPT_RATE_PER_SECOND"],
                flag "R" [Option<String>] "new connections accepted per second, sustained (default 500)" live;
            /// Token-bucket size for accepting connections.
            accept_burst => accept_burst: u32 = Some(DEFAULT_ACCEPT_BURST),
                Count::<u32>::new(1, MAX_ACCEPT_BURST as u64),
                env ["ACCEPT_BURST"],
                flag "N" [Option<String>] "new connections accepted at once after a pause (default 1000)" live;
            /// Connections one source address may hold at once.
            max_connections_per_address => max_connections_per_address: usize = Some(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
                Count::<usize>::new(1, MAX_MAX_CONNECTIONS as u64),
                env ["MAX_CONNECTIONS_PER_ADDRESS"],
                flag "N" [Option<String>] "miner connections one source address may hold (default 64)" live;
            /// New connections per second one source address may open.
            accept_rate_per_address => accept_rate_per_address: f64 = Some(DEFAULT_ACCEPT_RATE_PER_ADDRESS),
                Rate { max: MAX_ACCEPT_RATE_PER_SECOND },
                env ["ACCEPT_RATE_PER_ADDRESS"],
                flag "R" [Option<String>] "new connections per second one source address may open, sustained (default 4)" live;
            /// Other per-address limits for whole networks.
            address_overrides => address_overrides: Vec<AddressRule> = Some(Vec::new()), AddressRules,
                env ["ADDRESS_OVERRIDES"],
                flag "RULES" [Option<String>] "per-address limits by network: CIDR=CONNECTIONS[/RATE],... (longest prefix wins)" live;
            /// Silence on a socket before the first TCP keepalive probe.
            tcp_keepalive_idle_seconds => tcp_keepalive_idle: Duration = Some(DEFAULT_TCP_KEEPALIVE_IDLE),
                Seconds { zero_allowed: true },
                env ["TCP_KEEPALIVE_IDLE_SECONDS"],
                flag "S" [Option<String>] "silence before the first TCP keepalive probe on both sockets, 0 = off (default 30)" live;
            /// Time between TCP keepalive probes.
            tcp_keepalive_interval_seconds => tcp_keepalive_interval: Duration = Some(DEFAULT_TCP_KEEPALIVE_INTERVAL),
                Seconds { zero_allowed: false },
                env ["TCP_KEEPALIVE_INTERVAL_SECONDS"],
                flag "S" [Option<String>] "time between TCP keepalive probes (default 10)" live;
            /// Unanswered keepalive probes before a connection is dropped.
            tcp_keepalive_probes => tcp_keepalive_probes: u32 = Some(DEFAULT_TCP_KEEPALIVE_PROBES),
                Count::<u32>::new(1, MAX_TCP_KEEPALIVE_PROBES as u64),
                env ["TCP_KEEPALIVE_PROBES"],
                flag "N" [Option<String>] "unanswered TCP keepalive probes before a connection is dropped (default 3)" live;
            /// Longest time sent data may stay unacknowledged (TCP_USER_TIMEOUT).
            tcp_user_timeout_seconds => tcp_user_timeout: Duration = Some(DEFAULT_TCP_USER_TIMEOUT),
                Seconds { zero_allowed: true },
                env ["TCP_USER_TIMEOUT_SECONDS"],
                flag "S" [Option<String>] "longest time sent data may stay unacknowledged on both sockets, 0 = kernel default (default 60)" live;
            /// Time to open the upstream TCP connection.
            connect_timeout_seconds => connect_timeout: Duration = Some(DEFAULT_CONNECT_TIMEOUT),
                Seconds { zero_allowed: false },
                env ["CONNECT_TIMEOUT_SECONDS"],
                flag "S" [Option<String>] "time to connect to the pool (default 10)" live;
            /// Time a relay may pass without a byte from the miner.
            idle_timeout_seconds => idle_timeout: Duration = Some(DEFAULT_IDLE_TIMEOUT),
                Seconds { zero_allowed: false },
                env ["IDLE_TIMEOUT_SECONDS"],
                flag "S" [Option<String>] "close a relay when the miner sent nothing this long (default 900)" live;
            /// Time for a new miner to send its first line.
            handshake_timeout_seconds => handshake_timeout: Duration = Some(DEFAULT_HANDSHAKE_TIMEOUT),
                Seconds { zero_allowed: false },
                env ["HANDSHAKE_TIMEOUT_SECONDS"],
                flag "S" [Option<String>] "time for a miner to send its first line (default 30)" live;
            /// Time open relays may finish after a stop signal (may be zero).
            shutdown_grace_seconds => shutdown_grace: Duration = Some(DEFAULT_SHUTDOWN_GRACE),
                SecondsUpTo { max: MAX_SHUTDOWN_GRACE, zero_allowed: true },
                env ["SHUTDOWN_GRACE_SECONDS"],
                flag "S" [Option<String>] "time open relays may finish after SIGTERM, 0 to 40 (default 30)" restart;
            /// Time after which a request without response counts as expired.
            request_timeout_seconds => request_timeout: Duration = Some(DEFAULT_REQUEST_TIMEOUT),
                Seconds { zero_allowed: false },
                env ["REQUEST_TIMEOUT_SECONDS"],
                flag "S" [Option<String>] "stop waiting for a response to a request after this long (default 60)" restart;
            /// Window over which `/healthz` judges upstream reachability.
            health_interval_seconds => health_interval: Duration = Some(DEFAULT_HEALTH_INTERVAL),
                Seconds { zero_allowed: false },
                env ["HEALTH_INTERVAL_SECONDS"],
                flag "S" [Option<String>] "window in which /healthz needs a reachable pool (default 60)" restart;
            /// Source of the `client_id` metric label.
            client_id => client_id: ClientIdMode = Some(DEFAULT_CLIENT_ID),
                Choice::new(&ClientIdMode::ALL, kinds::client_id_str),
                env ["CLIENT_ID"],
                flag "MODE" [Option<String>] "client_id metric label: account (default), worker, peer_ip or none" restart;
            /// Distinct `client_id` labels kept before new ones count as `_other`.
            client_id_cap => client_id_cap: usize = Some(DEFAULT_CLIENT_ID_CAP),
                Count::<usize>::new(1, MAX_CLIENT_ID_CAP as u64),
                env ["CLIENT_ID_CAP"],
                flag "N" [Option<String>] "distinct client_id labels before new ones count as _other (default 1000)" restart;
            /// Executor threads for the relay.
            threads => threads: usize = Some(DEFAULT_THREADS),
                Count::<usize>::new(1, MAX_THREADS as u64),
                env ["THREADS"],
                flag "N" [Option<String>] "relay executor threads (default 1)" restart;
            /// HTTP worker threads.
            http_threads => http_threads: usize = Some(DEFAULT_HTTP_THREADS),
                Count::<usize>::new(1, MAX_HTTP_THREADS as u64),
                env ["HTTP_THREADS"],
                flag "N" [Option<String>] "HTTP server threads (default 2)" restart;
            /// Time between health probes of each pool.
            pool_check_interval_seconds => pool_check_interval: Duration = Some(DEFAULT_CHECK_INTERVAL),
                Seconds { zero_allowed: false },
                env ["POOL_CHECK_INTERVAL_SECONDS"],
                flag "S" [Option<String>] "time between health probes of each pool (default 2)" restart;
            /// Consecutive failed dials or probes that take a pool down.
            pool_fall => pool_fall: u32 = Some(DEFAULT_FALL),
                Count::<u32>::new(1, 100),
                env ["POOL_FALL"],
                flag "N" [Option<String>] "consecutive failed dials or probes that take a pool down (default 3)" restart;
            /// Consecutive good probes that bring a pool back up.
            pool_rise => pool_rise: u32 = Some(DEFAULT_RISE),
                Count::<u32>::new(1, 100),
                env ["POOL_RISE"],
                flag "N" [Option<String>] "consecutive good probes that bring a pool back up (default 3)" restart;
            /// What a health probe does.
            pool_probe => pool_probe: ProbeKind = Some(ProbeKind::Subscribe),
                Choice::new(&ProbeKind::ALL, kinds::probe_str),
                env ["POOL_PROBE"],
                flag "KIND" [Option<String>] "health probe: subscribe (default: must be answered) or tcp (connect only)" restart;
            /// Notify silence, in multiples of the pool's own notify interval,
            /// that makes a pool with miners stalled.
            pool_stall_factor => pool_stall_factor: f64 = Some(DEFAULT_STALL_FACTOR),
                Rate { max: 1000.0 },
                env ["POOL_STALL_FACTOR"],
                flag "X" [Option<String>] "a pool with miners but no mining.notify for X times its notify interval is stalled (default 3)" restart;
            /// Longest wait for a moved miner's requests in flight.
            failover_wait_seconds => failover_wait: Duration = Some(DEFAULT_FAILOVER_WAIT),
                Seconds { zero_allowed: true },
                env ["FAILOVER_WAIT_SECONDS"],
                flag "S" [Option<String>] "when a pool goes down, wait this long at most for a miner's unanswered requests before closing it (default 2)" restart;
            /// Time a better pool must have been up before miners move back to it (0: never).
            failback_after_seconds => failback_after: Duration = Some(DEFAULT_FAILBACK_AFTER),
                Seconds { zero_allowed: true },
                env ["FAILBACK_AFTER_SECONDS"],
                flag "S" [Option<String>] "move miners back to a better pool once it has been up this long; 0 = never (default 120)" restart;
            /// Most miners moved per second (failback).
            move_rate_per_second => move_rate_per_second: f64 = Some(DEFAULT_MOVE_RATE_PER_SECOND),
                Rate { max: 100000.0 },
                env ["MOVE_RATE_PER_SECOND"],
                flag "R" [Option<String>] "most miners moved to another pool per second (default 10)" restart;
            /// Move miners with a `client.reconnect` line instead of closing them.
            reconnect_message => reconnect_message: bool = Some(false), Switch,
                env ["RECONNECT_MESSAGE"],
                flag "BOOL" [Option<String>] "move a miner by sending it one client.reconnect line instead of closing it (default false)" restart;
            /// Drift of a pool's hashrate share above its weight's share that
            /// makes miners move (1 = never).
            balance_tolerance => balance_tolerance: f64 = Some(DEFAULT_BALANCE_TOLERANCE),
                Rate { max: 1.0 },
                env ["BALANCE_TOLERANCE"],
                flag "F" [Option<String>] "move miners off a pool whose hashrate share exceeds its weight's share by more than this (default 0.05; 1 = never)" restart;
            /// Bearer token required by `/metrics` and `/status`, if any.
            metrics_token => metrics_token: Option<Secret> = Some(None), Token,
                env ["METRICS_TOKEN"],
                flag "TOKEN" [Option<String>] "bearer token required by /metrics and /status (prefer METRICS_TOKEN: flags are visible in ps)" restart;
        }
    };
}

pub(crate) use config_keys;
