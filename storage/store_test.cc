// Store and Recover on a real RocksDB in a temp directory: the job key layout
// is recorded, and a store written with another layout is refused, not
// misread.
#include <gtest/gtest.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "storage/job_codec.h"
#include "storage/recovery.h"
#include "storage/store.h"

namespace ringq::storage {
namespace {

class StoreLayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("ringq-store-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Store> Open() {
    auto s = Store::Open(DbDir(dir_.string()));
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? std::move(s.value()) : nullptr;
  }
  engine::Result<RecoveryResult> RecoverWith(Store& store) {
    RecoveryOptions o;
    o.data_dir = dir_.string();
    o.shards = 2;
    o.log = [](const std::string&) {};
    return Recover(store, o);
  }

  std::filesystem::path dir_;
};

TEST_F(StoreLayoutTest, ANewStoreRecordsTheCurrentLayout) {
  auto store = Open();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->KeyLayout(), 0u);
  auto r = RecoverWith(*store);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(store->KeyLayout(), kJobKeyLayout);
  EXPECT_EQ(store->StoredShards(), 2u);
}

// A store from before layouts were recorded, holding a job: its keys would be
// misread as other ids on other shards, so recovery refuses it, clearly.
TEST_F(StoreLayoutTest, JobsOfAnUnrecordedLayoutAreRefusedNotMisread) {
  {
    auto store = Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->SetStoredShards(2).ok());
    rocksdb::WriteBatch b;
    const std::string old_key("\0\0\0\0\0\0\x01\x01", 8);  // id 257 big-endian (layout 1)
    b.Put(store->cf(Store::kJobs), old_key, "spec");
    b.Put(store->cf(Store::kJobState), old_key, "state");
    ASSERT_TRUE(store->Write(&b).ok());
    ASSERT_TRUE(store->Flush().ok());
  }
  auto store = Open();
  ASSERT_TRUE(store);
  auto r = RecoverWith(*store);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), engine::Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("older key layout"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("empty --data-dir"), std::string::npos);
  EXPECT_EQ(store->KeyLayout(), 0u) << "a refused store must not be stamped";
}

// Without jobs nothing can be misread: the old store is stamped and used.
TEST_F(StoreLayoutTest, AnUnrecordedStoreWithoutJobsIsStamped) {
  {
    auto store = Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->SetStoredShards(2).ok());
  }
  auto store = Open();
  ASSERT_TRUE(store);
  auto r = RecoverWith(*store);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(store->KeyLayout(), kJobKeyLayout);
}

TEST_F(StoreLayoutTest, ANewerLayoutIsRefused) {
  {
    auto store = Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->SetStoredShards(2).ok());
    ASSERT_TRUE(store->SetKeyLayout(kJobKeyLayout + 1).ok());
  }
  auto store = Open();
  ASSERT_TRUE(store);
  auto r = RecoverWith(*store);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), engine::Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("newer ringqd"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace ringq::storage
