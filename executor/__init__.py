"""netledger.executor"""
