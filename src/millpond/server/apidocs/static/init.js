// The API docs page: Swagger UI on the server's own OpenAPI document (a file, not an
// inline script, so the page's CSP allows scripts from the server alone).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
