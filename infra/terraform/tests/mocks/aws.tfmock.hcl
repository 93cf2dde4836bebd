# Mock values both test files share (`mock_provider "aws" { source = "./tests/mocks" }`): the
# account and partition, and policy documents that are policies (the provider validates them).

mock_data "aws_caller_identity" {
  defaults = { account_id = "123456789012" }
}

mock_data "aws_partition" {
  defaults = { partition = "aws" }
}

mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
