//! Usher's HTTP/1.1 load-balancer data plane.
