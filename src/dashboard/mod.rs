//! The live dashboard (`GET /dashboard`, protocol §5): one static page, embedded
//! in the binary. It holds no data: its own script reads `/stats` and `/health`
//! every second, and tails a topic over `/ws`, with the key the user gives it.

/// The page: HTML, inline CSS and plain JavaScript, no external resources.
pub const PAGE: &str = include_str!("index.html");

pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The page's script may run only if it is exactly the embedded one (its hash),
/// so a topic name or payload that ever reached the DOM as HTML could not run
/// anything. `dashboard::tests::csp_hash_matches_the_script` keeps the hash honest.
pub const CSP: &str = "default-src 'none'; \
    script-src 'sha256-W87V6xhtdz4Z89GZj0za+ve0SN6cUD8C297oy8f3POE='; \
    style-src 'unsafe-inline'; \
    connect-src 'self' ws: wss:; \
    img-src 'self' data:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers of `GET /dashboard`: always revalidated (it changes with the binary),
/// never framed, never sniffed.
pub const HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-cache"),
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

/// Headers of `GET /`'s redirect. Relative, so that the page is found behind a
/// reverse proxy that serves pubsubd under a path prefix.
pub const REDIRECT_HEADERS: &[(&str, &str)] = &[("Location", "dashboard")];

#[cfg(test)]
mod tests {
    use super::*;

    /// The page's one inline script, between its `<script>` tags.
    fn script() -> &'static str {
        let start = PAGE.find("<script>").expect("the page has a script") + "<script>".len();
        let end = PAGE.rfind("</script>").expect("the script ends");
        assert_eq!(
            PAGE.matches("<script").count(),
            1,
            "the CSP hash covers exactly one script"
        );
        &PAGE[start..end]
    }

    #[test]
    fn csp_hash_matches_the_script() {
        let hash = base64(&sha256(script().as_bytes()));
        assert!(
            CSP.contains(&format!("'sha256-{hash}'")),
            "update CSP in src/dashboard/mod.rs: script-src 'sha256-W87V6xhtdz4Z89GZj0za+ve0SN6cUD8C297oy8f3POE='"
        );
    }

    #[test]
    fn page_is_small_and_self_contained() {
        assert!(PAGE.len() <= 40 * 1024, "page is {} bytes", PAGE.len());
        // The SVG namespace is a name, not a resource.
        let page = PAGE.replace("\"http://www.w3.org/2000/svg\"", "");
        for external in [
            "http://",
            "https://",
            "//cdn",
            "@import",
            "url(",
            "<link rel=\"stylesheet",
        ] {
            assert!(!page.contains(external), "page refers to {external}");
        }
        assert!(
            !PAGE.contains("innerHTML"),
            "names and payloads go in as text"
        );
    }

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(
            base64(&sha256(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            base64(&sha256(b"abc")),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        let long = vec![b'a'; 1000];
        assert_eq!(
            base64(&sha256(&long)),
            "Qe3s5C1j6Nm/UVqbppMuHCDLyfWl0TRkWttdsblzfqM="
        );
    }

    /// SHA-256 (FIPS 180-4), for the test only: the binary never hashes the page.
    fn sha256(data: &[u8]) -> [u8; 32] {
        const K: [u32; 64] = [
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
            0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
            0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
            0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
            0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
            0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
            0xc67178f2,
        ];
        let mut h: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let mut msg = data.to_vec();
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
        for block in msg.chunks(64) {
            let mut w = [0u32; 64];
            for (i, word) in block.chunks(4).enumerate() {
                w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[i - 7])
                    .wrapping_add(s1);
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
            for i in 0..64 {
                let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
                let ch = (e & f) ^ (!e & g);
                let t1 = hh
                    .wrapping_add(s1)
                    .wrapping_add(ch)
                    .wrapping_add(K[i])
                    .wrapping_add(w[i]);
                let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
                let maj = (a & b) ^ (a & c) ^ (b & c);
                let t2 = s0.wrapping_add(maj);
                hh = g;
                g = f;
                f = e;
                e = d.wrapping_add(t1);
                d = c;
                c = b;
                b = a;
                a = t1.wrapping_add(t2);
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
                *x = x.wrapping_add(y);
            }
        }
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_mut(4).zip(h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
