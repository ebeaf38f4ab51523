//! The shopper page's tests again (`shop_page.rs`), with the server in cluster mode on its own
//! `redis-server`.

#[path = "shop_page.rs"]
mod page;
