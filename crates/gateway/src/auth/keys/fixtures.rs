//! Test keys (made for these tests only, never used anywhere else).

/// An EC P-256 private key (PKCS#8): signs the ES256 tokens of the tests.
pub(crate) const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFxdCWr1uf0AXFQhm
dqDphQjDhz4/zWVX5OOJeWnhl7WhRANCAAQ8IoPt4bER2Md1g3DXO02TgFpH1CM8
bp+BMZWneb10d4e71RKABEHUr4R2k+8pUG7QV+d5ODc9d2hi6/87t4et
-----END PRIVATE KEY-----
";

/// Its public key.
pub(crate) const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPCKD7eGxEdjHdYNw1ztNk4BaR9Qj
PG6fgTGVp3m9dHeHu9USgARB1K+EdpPvKVBu0FfneTg3PXdoYuv/O7eHrQ==
-----END PUBLIC KEY-----
";

/// Its public key as a JWK's `x` and `y`.
pub(crate) const EC_X: &str = "PCKD7eGxEdjHdYNw1ztNk4BaR9QjPG6fgTGVp3m9dHc";
/// See [`EC_X`].
pub(crate) const EC_Y: &str = "h7vVEoAEQdSvhHaT7ylQbtBX53k4Nz13aGLr_zu3h60";

/// An EC P-384 public key.
pub(crate) const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEZiNnlgJpaBbspNgYirAQ3SCNqwLp47iy
zLXSF45FCOnTPXBRa0XKihNBpQBOFJOAU788TkkzLRgKV7zXVGxl62vGJv9HR38l
5daNjtoS6OzqRnljbI09S6SVEMvMJScA
-----END PUBLIC KEY-----
";

/// An RSA-2048 public key.
pub(crate) const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx6gYEOS/ZQcPTmY7+4Km
OMzpTGQXQT7mgBPrJTLZY36Nbayf9fwqS1V6IPeNOtiQ88y10o4XKsHqosVktn5C
fGKvvAhnfn+PZ+GECvGHOXbF3nr+/xXmO+qAjvAOIb2gBBeDx4Cpq64cHy/rfuST
GBB3alW9CWYjZcQI8uaxt1ucomU4XV+hp7vkom8y5kH1NpFjhifKiiUh0fgb9ZSA
rUJetuuDaFdr0uNdvdsXt0oZ1xeuVLTadHo/NGCIH0Va75OK6PnqgmZZlMjvIuXF
OS1tXataU8DOOYQzTGJd8FSJXxfVIzWRhBY9YSDaglx7c/K/lhbe6A5lCm1CQyef
kwIDAQAB
-----END PUBLIC KEY-----
";

/// Its modulus as a JWK's `n` (`e` is `AQAB`).
pub(crate) const RSA_N: &str = "x6gYEOS_ZQcPTmY7-4KmOMzpTGQXQT7mgBPrJTLZY36Nbayf9fwqS1V6IPeNOtiQ88y10o4XKsHqosVktn5CfGKvvAhnfn-PZ-GECvGHOXbF3nr-_xXmO-qAjvAOIb2gBBeDx4Cpq64cHy_rfuSTGBB3alW9CWYjZcQI8uaxt1ucomU4XV-hp7vkom8y5kH1NpFjhifKiiUh0fgb9ZSArUJetuuDaFdr0uNdvdsXt0oZ1xeuVLTadHo_NGCIH0Va75OK6PnqgmZZlMjvIuXFOS1tXataU8DOOYQzTGJd8FSJXxfVIzWRhBY9YSDaglx7c_K_lhbe6A5lCm1CQyefkw";
