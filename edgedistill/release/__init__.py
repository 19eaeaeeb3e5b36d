"""The release: report.json, the model card and page, the budget gate, and device results recorded into a bundle."""
