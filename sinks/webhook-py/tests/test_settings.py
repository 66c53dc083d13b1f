"""Unit tests of webhook_sink.settings (run by `build.sh test`)."""

import unittest

from webhook_sink.settings import DEFAULT_MAX_BYTES, Settings, SettingsError, parse_url


class ParseUrl(unittest.TestCase):
    def test_splits_scheme_authority_and_path_with_query(self):
        t = parse_url("http://127.0.0.1:8080/ingest?source=kubesink")
        self.assertEqual((t.scheme, t.authority, t.path_with_query), ("http", "127.0.0.1:8080", "/ingest?source=kubesink"))
        self.assertEqual(t.origin(), "http://127.0.0.1:8080")

    def test_defaults_path_and_keeps_default_port_implicit(self):
        t = parse_url("https://hooks.example.com")
        self.assertEqual((t.scheme, t.authority, t.path_with_query), ("https", "hooks.example.com", "/"))

    def test_brackets_ipv6(self):
        self.assertEqual(parse_url("http://[::1]:9/x").authority, "[::1]:9")

    def test_refuses_other_schemes_credentials_fragments_and_bad_ports(self):
        for url, words in [
            ("ftp://example.com/", "scheme"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://example.com/#top", "fragment"),
            ("http://example.com:99999/", "not a valid URL"),
            ("http:///path", "no host"),
        ]:
            with self.subTest(url=url):
                with self.assertRaises(SettingsError) as e:
                    parse_url(url)
                self.assertIn(words, str(e.exception))
                self.assertIn("`url`", str(e.exception))


class ParseSettings(unittest.TestCase):
    def test_defaults_and_headers_sorted(self):
        s = Settings.parse([("url", "http://h/"), ("header.X-B", "2"), ("header.Authorization", "Bearer t")])
        self.assertEqual(s.max_bytes, DEFAULT_MAX_BYTES)
        self.assertEqual(s.headers, (("Authorization", "Bearer t"), ("X-B", "2")))

    def test_max_bytes_bounds(self):
        self.assertEqual(Settings.parse([("url", "http://h/"), ("max_bytes", "2048")]).max_bytes, 2048)
        for bad in ["12", "99999999999", "1Mi", ""]:
            with self.subTest(bad=bad):
                with self.assertRaises(SettingsError) as e:
                    Settings.parse([("url", "http://h/"), ("max_bytes", bad)])
                self.assertIn("max_bytes", str(e.exception))

    def test_names_unknown_missing_and_repeated_keys(self):
        cases = [
            ([("url", "http://h/"), ("URL", "x")], "unknown setting `URL`"),
            ([], "`url` is required"),
            ([("url", "http://h/"), ("url", "http://i/")], "`url` is given twice"),
        ]
        for pairs, words in cases:
            with self.subTest(pairs=pairs):
                with self.assertRaises(SettingsError) as e:
                    Settings.parse(pairs)
                self.assertIn(words, str(e.exception))

    def test_refuses_reserved_and_malformed_headers_without_echoing_values(self):
        for key, value, words in [
            ("header.Content-Length", "1", "set by the sink or the host"),
            ("header.Idempotency-Key", "1", "set by the sink or the host"),
            ("header.Bad Name", "1", "not a valid header name"),
            ("header.", "1", "not a valid header name"),
            ("header.X-Token", "secret-value\r\nInjected: 1", "line break"),
        ]:
            with self.subTest(key=key):
                with self.assertRaises(SettingsError) as e:
                    Settings.parse([("url", "http://h/"), (key, value)])
                self.assertIn(words, str(e.exception))
                self.assertNotIn("secret-value", str(e.exception))


if __name__ == "__main__":
    unittest.main()
