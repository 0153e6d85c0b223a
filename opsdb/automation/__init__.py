"""opsdb.automation"""
