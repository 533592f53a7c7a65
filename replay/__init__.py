"""netledger.replay"""
