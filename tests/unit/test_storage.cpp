// The storage module's pure parts: how STORAGE_BACKEND and the PoC's S3_* /
// WEBDAV_* variables map onto an rclone remote (no rclone is run), and that
// credentials never survive into a message.
#include <gtest/gtest.h>

#include "storage/storage.h"

using namespace bk;

namespace {

Storage configured(const std::map<std::string, std::string>& flags, Status* st) {
  Config c;
  *st = config_load(&c, "", flags);
  Storage s;
  if (st->ok()) *st = storage_config(c, &s);
  return s;
}

}  // namespace

TEST(StorageConfig, LocalAndMountedDriveStayOnDisk) {
  Status st;
  EXPECT_EQ(configured({}, &st).backend, "local");
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(configured({{"STORAGE_BACKEND", "gdrive"}}, &st).backend, "local");
  ASSERT_TRUE(st.ok()) << st.msg;
  // A remote given with the local backend would be ignored: refused instead.
  configured({{"STORAGE_REMOTE", "x:y"}}, &st);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("STORAGE_BACKEND=rclone"), std::string::npos) << st.msg;
}

TEST(StorageConfig, RcloneNeedsAPlainRemoteName) {
  Status st;
  Storage s = configured({{"STORAGE_BACKEND", "rclone"}, {"STORAGE_REMOTE", "mydav:runs/a/"}}, &st);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(s.backend, "rclone");
  EXPECT_EQ(s.remote, "mydav:runs/a");
  configured({{"STORAGE_BACKEND", "rclone"}}, &st);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("STORAGE_REMOTE=<remote>:<path>"), std::string::npos) << st.msg;
  // A connection string would carry its credentials on the command line.
  configured({{"STORAGE_BACKEND", "rclone"}, {"STORAGE_REMOTE", ":s3,secret_access_key=abc:bucket"}}, &st);
  EXPECT_FALSE(st.ok());
  configured({{"STORAGE_BACKEND", "rclone"}, {"STORAGE_REMOTE", "no-colon"}}, &st);
  EXPECT_FALSE(st.ok());
  // gdrive with a remote is that (Drive) remote through rclone.
  s = configured({{"STORAGE_BACKEND", "gdrive"}, {"STORAGE_REMOTE", "drive:bitnet_poc"}}, &st);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(s.backend, "rclone");
  EXPECT_EQ(s.remote, "drive:bitnet_poc");
}

TEST(StorageConfig, S3VariablesBecomeAnRcloneRemoteInTheEnvironment) {
  Status st;
  Storage s = configured({{"STORAGE_BACKEND", "s3"},
                          {"S3_BUCKET", "runs"},
                          {"S3_ENDPOINT_URL", "http://127.0.0.1:9000"},
                          {"S3_ACCESS_KEY_ID", "AKIDEXAMPLE"},
                          {"S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"}},
                         &st);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(s.remote, "bitkd_s3:runs/bitkd");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_S3_TYPE"], "s3");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_S3_ENDPOINT"], "http://127.0.0.1:9000");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_S3_ACCESS_KEY_ID"], "AKIDEXAMPLE");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_S3_SECRET_ACCESS_KEY"], "wJalrXUtnFEMI");
  EXPECT_EQ(s.env.count("RCLONE_CONFIG_BITKD_S3_ENV_AUTH"), 0u);
  EXPECT_EQ(storage_redact("denied for wJalrXUtnFEMI", s.secrets), "denied for ****");
  // No keys: the AWS environment or instance credentials.
  s = configured({{"STORAGE_BACKEND", "s3"}, {"S3_BUCKET", "runs"}, {"S3_PREFIX", "p/q"}}, &st);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(s.remote, "bitkd_s3:runs/p/q");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_S3_ENV_AUTH"], "true");
  configured({{"STORAGE_BACKEND", "s3"}, {"S3_BUCKET", "runs"}, {"S3_ACCESS_KEY_ID", "AKID"}}, &st);
  EXPECT_FALSE(st.ok());
  configured({{"STORAGE_BACKEND", "s3"}}, &st);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("S3_BUCKET"), std::string::npos) << st.msg;
}

TEST(StorageConfig, WebdavPasswordIsRefusedWithTheRcloneSetting) {
  Status st;
  Storage s = configured({{"STORAGE_BACKEND", "webdav"}, {"WEBDAV_URL", "https://dav.example/remote.php/webdav"},
                          {"WEBDAV_USER", "me"}},
                         &st);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(s.remote, "bitkd_webdav:bitkd");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_WEBDAV_URL"], "https://dav.example/remote.php/webdav");
  EXPECT_EQ(s.env["RCLONE_CONFIG_BITKD_WEBDAV_USER"], "me");
  configured({{"STORAGE_BACKEND", "webdav"}, {"WEBDAV_URL", "https://x"}, {"WEBDAV_PASSWORD", "hunter22"}}, &st);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("RCLONE_CONFIG_MYDAV_PASS"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("rclone obscure"), std::string::npos) << st.msg;
  EXPECT_EQ(st.msg.find("hunter22"), std::string::npos) << st.msg;
  configured({{"STORAGE_BACKEND", "ftp"}}, &st);
  EXPECT_FALSE(st.ok());
}

TEST(StorageRedact, UrlUserInfoQueryCredentialsAndGivenValues) {
  // rclone's own error lines, as it prints them.
  EXPECT_EQ(storage_redact("Propfind \"https://bob:s3cr3t@dav.example/x\": 401 Unauthorized", {}),
            "Propfind \"https://****@dav.example/x\": 401 Unauthorized");
  EXPECT_EQ(storage_redact("GET https://b.s3.example/o?X-Amz-Signature=abc123&X-Amz-Date=1 failed", {}),
            "GET https://b.s3.example/o?X-Amz-Signature=****&X-Amz-Date=1 failed");
  EXPECT_EQ(storage_redact("oauth2: access_token=ya29.abc refresh_token=1//xyz", {}),
            "oauth2: access_token=**** refresh_token=****");
  EXPECT_EQ(storage_redact("bad password topsecretvalue here", {"topsecretvalue"}), "bad password **** here");
  // Text without credentials is left alone, and so are values too short to tell apart.
  EXPECT_EQ(storage_redact("copy a=1 to http://host/path: 404", {"ab"}), "copy a=1 to http://host/path: 404");
}
