// keycelld's configuration parser.
#include "daemon/config.h"

#include <gtest/gtest.h>

#include <string>

#include "protocol/key_policy.h"

namespace kc::daemon {
namespace {

TEST(DaemonConfig, ParsesValidFile) {
  Result<DaemonConfig> config = ParseConfig(
      "# keycelld\n"
      "socket /run/keycelld/keycelld.sock\n"
      "socket_mode 0640\n"
      "socket_group root\n"
      "user nobody\n"
      "workers 3\n"
      "\n"
      "key web-rsa {   # the web server's key\n"
      "  file /etc/keycell/web.key\n"
      "  passphrase_file /etc/keycell/web.pass\n"
      "  allow_users root nobody\n"
      "  allow_groups root\n"
      "  allow_rsa_decryption yes\n"
      "}\n"
      "key mail {\n"
      "\tfile /etc/keycell/mail.key\r\n"
      "  allow_groups root\n"
      "}\n",
      "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->socket, "/run/keycelld/keycelld.sock");
  EXPECT_EQ(config->socket_mode, 0640u);
  EXPECT_EQ(config->socket_group, "root");
  EXPECT_EQ(config->socket_gid, 0u);
  EXPECT_EQ(config->user, "nobody");
  EXPECT_EQ(config->workers, 3u);
  ASSERT_EQ(config->keys.size(), 2u);
  const KeyConfig &web = config->keys[0];
  EXPECT_EQ(web.name, "web-rsa");
  EXPECT_EQ(web.line, 8);
  EXPECT_EQ(web.file, "/etc/keycell/web.key");
  EXPECT_EQ(web.passphrase_file, "/etc/keycell/web.pass");
  EXPECT_EQ(web.allow_users.size(), 2u);
  EXPECT_EQ(web.allow_groups.size(), 1u);
  EXPECT_TRUE(web.policy.allow_decrypt);
  const KeyConfig &mail = config->keys[1];
  EXPECT_EQ(mail.file, "/etc/keycell/mail.key");
  EXPECT_FALSE(mail.policy.allow_decrypt);
  EXPECT_TRUE(mail.passphrase_file.empty());
}

TEST(DaemonConfig, ParsesKeyPolicy) {
  Result<DaemonConfig> config = ParseConfig(
      "socket /tmp/k.sock\n"
      "key tls13 {\n"
      "  file /k\n"
      "  allow_users root\n"
      "  allow_digests SHA256 sha-384 none\n"
      "  allow_rsa_paddings pss\n"
      "}\n"
      "key decrypt-only {\n"
      "  file /k\n"
      "  allow_users root\n"
      "  allow_signing no\n"
      "  allow_rsa_decryption yes\n"
      "}\n"
      "key default {\n"
      "  file /k\n"
      "  allow_users root\n"
      "}\n",
      "t.conf");
  ASSERT_TRUE(config.ok()) << config.status().message();
  ASSERT_EQ(config->keys.size(), 3u);
  const protocol::KeyPolicy &tls13 = config->keys[0].policy;
  EXPECT_TRUE(tls13.allow_sign);
  EXPECT_FALSE(tls13.allow_decrypt);
  EXPECT_EQ(protocol::DigestListNames(tls13.digests), "none SHA256 SHA384");
  EXPECT_EQ(tls13.rsa_sign_paddings, protocol::kSignPaddingPss);
  const protocol::KeyPolicy &decrypt_only = config->keys[1].policy;
  EXPECT_FALSE(decrypt_only.allow_sign);
  EXPECT_TRUE(decrypt_only.allow_decrypt);
  const protocol::KeyPolicy &defaults = config->keys[2].policy;
  EXPECT_TRUE(defaults.allow_sign);
  EXPECT_FALSE(defaults.allow_decrypt);
  EXPECT_EQ(defaults.digests, protocol::kAllDigests);
  EXPECT_EQ(defaults.rsa_sign_paddings, protocol::kAllSignPaddings);
}

struct ErrorCase {
  const char *text;
  const char *expected;  // The start of the message, with file and line.
};

TEST(DaemonConfig, ErrorsNameFileAndLine) {
  const std::string kSocket = "socket /tmp/k.sock\n";
  const ErrorCase cases[] = {
      {"socket /tmp/k.sock\nbogus 1\n",
       "t.conf:2: unknown directive \"bogus\""},
      {"socket /tmp/k.sock\nfile /x\n",
       "t.conf:2: unknown directive \"file\"; it belongs in a key block"},
      {"socket relative.sock\n",
       "t.conf:1: the socket path 'relative.sock' is not absolute"},
      {"socket /tmp/a\nsocket /tmp/b\n", "t.conf:2: duplicate \"socket\""},
      {"socket /tmp/a b\n", "t.conf:1: \"socket\" takes exactly one value"},
      {"socket /tmp/a\nsocket_mode 0999\n",
       "t.conf:2: invalid socket_mode '0999'"},
      {"socket /tmp/a\nsocket_mode 1777\n",
       "t.conf:2: invalid socket_mode '1777'"},
      {"socket /tmp/a\nworkers 0\n", "t.conf:2: invalid workers '0'"},
      {"socket /tmp/a\nworkers many\n", "t.conf:2: invalid workers 'many'"},
      {"socket /tmp/a\nuser no-such-user-kc\n",
       "t.conf:2: unknown user 'no-such-user-kc'"},
      {"socket /tmp/a\nsocket_group no-such-group-kc\n",
       "t.conf:2: unknown group 'no-such-group-kc'"},
      {"workers 2\n", "t.conf:1: the \"socket\" directive is missing"},
      {"socket /tmp/a\nkey a {\n file /k\n allow_users root\n",
       "t.conf:2: the block of key 'a' has no closing '}'"},
      {"socket /tmp/a\n}\n", "t.conf:2: '}' without an open key block"},
      {"socket /tmp/a\nkey a {\nkey b {\n",
       "t.conf:3: a key block cannot contain another key block"},
      {"socket /tmp/a\nkey a\n", "t.conf:2: expected \"key NAME {\""},
      {"socket /tmp/a\nkey -a {\n", "t.conf:2: invalid key name '-a'"},
      {"socket /tmp/a\nkey a {\n file /k\n allow_users root\n}\nkey a {\n",
       "t.conf:6: duplicate key name 'a'"},
      {"socket /tmp/a\nkey a {\n allow_users root\n}\n",
       "t.conf:4: the block of key 'a' has no \"file\" directive"},
      {"socket /tmp/a\nkey a {\n file /k\n}\n",
       "t.conf:4: the block of key 'a' has neither"},
      {"socket /tmp/a\nkey a {\n file k\n",
       "t.conf:3: the path 'k' is not absolute"},
      {"socket /tmp/a\nkey a {\n file /k\n file /j\n",
       "t.conf:4: duplicate \"file\""},
      {"socket /tmp/a\nkey a {\n allow_users\n",
       "t.conf:3: \"allow_users\" takes one or more names"},
      {"socket /tmp/a\nkey a {\n allow_users nobody-kc-x\n",
       "t.conf:3: unknown user 'nobody-kc-x'"},
      {"socket /tmp/a\nkey a {\n allow_groups nogroup-kc-x\n",
       "t.conf:3: unknown group 'nogroup-kc-x'"},
      {"socket /tmp/a\nkey a {\n allow_rsa_decryption maybe\n",
       "t.conf:3: invalid allow_rsa_decryption 'maybe'"},
      {"socket /tmp/a\nkey a {\n allow_signing maybe\n",
       "t.conf:3: invalid allow_signing 'maybe': expected yes or no"},
      {"socket /tmp/a\nkey a {\n allow_digests SHA256 FOO\n",
       "t.conf:3: invalid allow_digests: unknown digest 'FOO'"},
      {"socket /tmp/a\nkey a {\n allow_digests\n",
       "t.conf:3: \"allow_digests\" takes one or more names"},
      {"socket /tmp/a\nkey a {\n allow_rsa_paddings pss raw\n",
       "t.conf:3: invalid allow_rsa_paddings 'raw': expected pkcs1, pss or "
       "both"},
      {"socket /tmp/a\nkey a {\n allow_rsa_paddings pss\n"
       " allow_rsa_paddings pkcs1\n",
       "t.conf:4: duplicate \"allow_rsa_paddings\""},
      {"socket /tmp/a\nkey a {\n file /k\n allow_users root\n"
       " allow_signing no\n}\n",
       "t.conf:6: the block of key 'a' allows neither signing nor RSA "
       "decryption"},
      {"socket /tmp/a\nkey a {\n file /k\n allow_users root\n"
       " allow_rsa_decryption yes\n allow_digests SHA256\n"
       " allow_signing no\n}\n",
       "t.conf:6: \"allow_digests\" applies to signing, but the block of "
       "key 'a' turns signing off"},
      {"socket /tmp/a\nallow_digests SHA256\n",
       "t.conf:2: unknown directive \"allow_digests\"; it belongs in a key "
       "block"},
      {"socket /tmp/a\nkey a {\n workers 2\n",
       "t.conf:3: unknown directive \"workers\" in the block of key 'a'"},
      {"socket /tmp/a;\n", "t.conf:1: unexpected ';'"},
      {"socket /tmp/a\n} extra\n", "t.conf:2: unexpected text after '}'"},
  };
  for (const ErrorCase &error : cases) {
    Result<DaemonConfig> config = ParseConfig(error.text, "t.conf");
    ASSERT_FALSE(config.ok()) << error.text;
    EXPECT_EQ(config.status().message().rfind(error.expected, 0), 0u)
        << "text:\n"
        << error.text << "message: " << config.status().message();
  }
}

TEST(DaemonConfig, MissingFileIsAnError) {
  Result<DaemonConfig> config = LoadConfig("/nonexistent/keycelld.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("/nonexistent/keycelld.conf"),
            std::string::npos);
}

}  // namespace
}  // namespace kc::daemon
