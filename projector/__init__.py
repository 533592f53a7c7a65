"""netledger.projector"""
